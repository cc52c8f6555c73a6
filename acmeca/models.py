"""External ACME CAs, accounts and orders (issue: ACME)."""
