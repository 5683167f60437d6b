"""Bounds of integer query parameters: PostgreSQL's integer and bigint columns. A value past them
is a 422 at the edge, not a database error (a 500) when the query runs."""

INT32_MAX = 2**31 - 1  # integer columns (policy versions), and the deepest list offset served
INT64_MAX = 2**63 - 1  # bigint columns (audit entry ids)
