"""probers/connect"""
