"""rmq_common: message model, property codec, stored-record codec, message ids and topic naming."""
