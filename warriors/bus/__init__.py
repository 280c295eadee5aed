"""The event bus (Kafka): the relay publishing the store's events, and the consumer
groups feeding projections from the topic."""
