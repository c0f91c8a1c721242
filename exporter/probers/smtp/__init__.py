"""probers/smtp"""
