"""Helpers shared by the tests (no tests here). ``rows``: rows as the writer stores
them, inserted straight into a store; ``serving``: the service with its lifespan, an
HTTP client bound to it, a real uvicorn; ``middleware``: the middleware on an
in-memory broker and a reader of its registry's samples; ``waiting``: polling until a
condition holds (``wait_for``, and ``eventually`` for async tests); ``tcp_proxy``: a
proxy that takes a database away and gives it back; ``processes``: the product's
real processes (workers, the service, senders); ``observe``: scrapes, a scraper
thread, database counts, the service as a killable process; ``load``: a steady
client; ``api_walk``: every answer the service has about the stored rows;
``worker_app``, ``e2e_app`` and ``e2e_workload``: the taskiq apps and the workload
that the real workers run (by dotted name: ``tests.helpers.worker_app:broker``);
``e2e_scenario``: the end-to-end run shared by the Redis and RabbitMQ tests;
``alerting`` and ``paging_app``: a real Prometheus and Alertmanager with a webhook
receiver, and the workers whose tasks start and stop failing, for the paging test;
``replica``: a streaming replica of the test PostgreSQL."""
