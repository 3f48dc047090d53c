"""The lowest wing: errors, durable writes, locks, distributed setup, sharding, timing, tracking, the runtime line and test interruptions. Imports nothing else of tl_research."""
