"""Tests that run nameko services against the real local RabbitMQ."""
