"""probers/tls"""
