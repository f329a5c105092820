"""The scale path: PostgreSQL for everything replicas must share (used when SUPPORTBOT_DATABASE_URL is set).

`store` holds the logs (the same contract as the embedded `bot.store.InteractionStore`),
`coordination` the leases, leadership and shared limits, `migrations` the versioned schema.
"""
