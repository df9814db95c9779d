"""Command-line helpers of the plugin (data preparation)."""
