"""accvit_med.training"""
