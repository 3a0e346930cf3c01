"""Redis Streams inference worker: consumer group -> dynamic batcher -> engine -> replies."""
