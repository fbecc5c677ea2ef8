"""One module per panel and chart; the app only composes them."""
