"""Event schema, log readers, validation and the synthetic traffic source."""
