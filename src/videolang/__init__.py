"""videolang."""
