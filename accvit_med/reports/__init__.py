"""accvit_med.reports"""
