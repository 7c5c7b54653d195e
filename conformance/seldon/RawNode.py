class RawNode:
    """Seldon's low-level methods: whole messages in, whole messages out."""

    def route_raw(self, msg):
        rows = msg.get("data", {}).get("ndarray", [])
        return {"data": {"names": ["route"], "ndarray": [[len(rows) % 2]]}, "meta": {"tags": {"raw": "route"}}}

    def aggregate_raw(self, msgs):
        messages = msgs["seldonMessages"] if isinstance(msgs, dict) else msgs
        return {"jsonData": {"count": len(messages), "kinds": [sorted(m) for m in messages]}}

    def transform_input_raw(self, msg):
        return {"strData": "keys: " + ",".join(sorted(msg))}

    def predict_raw(self, msg):
        if "strData" in msg:
            return {"status": {"code": 422, "info": "no strings here", "reason": "RAW_REFUSED", "status": 1}}
        return {"data": {"ndarray": msg.get("data", {}).get("ndarray", [])}, "meta": {"tags": {"raw": True}}}
