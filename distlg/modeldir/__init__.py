"""modeldir"""
