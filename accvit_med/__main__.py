from accvit_med.cli import main

main()
