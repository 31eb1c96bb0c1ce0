"""accvit_med.models"""
