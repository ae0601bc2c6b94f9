"""Server-side services of the dashboard: the live run store (watching, tailing, caching, downsampling).

Nothing here imports dash; callbacks turn what these services return into components.
"""
