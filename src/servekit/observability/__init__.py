"""What a person running servekit sees of each request: request ids
(:mod:`.request_id`), log formats (:mod:`.logs`), OpenTelemetry traces
(:mod:`.tracing`) and progress bars for long work (:mod:`.progress`)."""
