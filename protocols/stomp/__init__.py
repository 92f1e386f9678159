"""protocols/stomp"""
