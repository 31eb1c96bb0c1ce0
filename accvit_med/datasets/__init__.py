"""accvit_med.datasets"""
