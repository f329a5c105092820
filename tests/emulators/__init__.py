"""Local emulators of external services (Slack Web API / Socket Mode) for tests."""
