"""Reading a broker's backlog from the broker itself: one module per broker kind
(:mod:`.redis_list`, :mod:`.redis_stream`, :mod:`.rabbitmq`), the protocol they
share (:mod:`.base`), the choice among them (:mod:`.select`) and the cache, timeout
and budget that keep a scrape cheap (:mod:`.backlog`)."""
