"""Certificate authorities, policies, subscribers and the certificate inventory (issue: pki)."""
