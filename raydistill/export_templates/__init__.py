"""Files that exports copy as they are (they import nothing from raydistill)."""
