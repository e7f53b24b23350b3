"""SSH to devices, shared by export (remote engine builds) and bench (remote timing)."""
