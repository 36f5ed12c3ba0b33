"""Binance spot trades: the WebSocket source, its parser and the historical dump importer."""
