"""Tornado handlers: parse, call one service, encode."""
