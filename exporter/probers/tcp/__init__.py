"""probers/tcp"""
