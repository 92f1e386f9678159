"""protocols/mqtt"""
