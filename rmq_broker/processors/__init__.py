"""Request processors of the broker: one class per family of request codes, each exposing handlers()."""
