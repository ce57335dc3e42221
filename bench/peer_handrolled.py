"""Peer (c): a hand-rolled loop, no framework. confluent-kafka ``consume(2000)``; rule
matching in Python (the project's ``Rule.matches`` per rule of the event's type); then ONE
Lua script call per batch that does every lead's read-modify-write in Redis (seen-id
check, forward-decayed per-rule sums, caps, hot/cool); acked produce of the crossings; a
synchronous offset commit.

What it leaves out (the table says so too): the exact first millisecond a hot lead cools
between events (it checks the score only at event times, so a ``lead_cooled`` caused by
decay is stamped at the next event, and a dip below ``cool`` that recovers before the next
event is missed); fit grades and ``min_grade``; reasons and deterministic crossing ids;
redelivery detection by offset (it relies on the seen-id set); the outbox (a crash between
the script and the produce loses those crossings); Redis Cluster (the script touches keys
it does not declare).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_common import Progress, iso_ms, peer_args

from schemas.times import parse_time_ms
from scoring.rules_file import default_rules_path, load_rules

#: KEYS: none (see the module docstring). ARGV[1]: key prefix; ARGV[2]: rules as JSON
#: [[points, half_life_ms, cap or false], ...]; ARGV[3], ARGV[4]: hot, cool; ARGV[5]: the
#: batch as JSON [[lead_id, event_id, occurred_at_ms, [rule index (1-based), ...]], ...].
#: Returns the crossings as JSON [[lead_id, kind, at_ms, score, trigger_event_id], ...].
SCRIPT = """
local prefix = ARGV[1]
local rules = cjson.decode(ARGV[2])
local hot_at, cool_at = tonumber(ARGV[3]), tonumber(ARGV[4])
local batch = cjson.decode(ARGV[5])
local min_h = math.huge
for _, r in ipairs(rules) do if r[2] < min_h then min_h = r[2] end end
local states, order, out = {}, {}, {}

local function score(st, t)
  local total = 0
  for i, r in ipairs(rules) do
    local v = st.acc[i] * math.pow(2, (st.L - t) / r[2])
    if r[3] then
      if v > r[3] then v = r[3] elseif v < -r[3] then v = -r[3] end
    end
    total = total + v
  end
  return total
end

for _, e in ipairs(batch) do
  local lead, eid, at, matched = e[1], e[2], e[3], e[4]
  local key = prefix .. 'h:{' .. lead .. '}'
  if redis.call('SADD', key .. ':seen', eid) == 1 then
    local st = states[lead]
    if not st then
      local raw = redis.call('GET', key)
      if raw then st = cmsgpack.unpack(raw) else
        st = {L = at, c = at, hot = false, acc = {}}
        for i = 1, #rules do st.acc[i] = 0 end
      end
      states[lead] = st
      order[#order + 1] = lead
    end
    local t = math.max(st.c, at)
    if st.hot and score(st, t) < cool_at then
      st.hot = false
      out[#out + 1] = {lead, 'lead_cooled', t, score(st, t), false}
    end
    if t - st.L > 64 * min_h then
      for i, r in ipairs(rules) do st.acc[i] = st.acc[i] * math.pow(2, (st.L - t) / r[2]) end
      st.L = t
    end
    for _, i in ipairs(matched) do
      st.acc[i] = st.acc[i] + rules[i][1] * math.pow(2, (at - st.L) / rules[i][2])
    end
    st.c = t
    local s = score(st, t)
    if not st.hot and s >= hot_at then
      st.hot = true
      out[#out + 1] = {lead, 'lead_became_hot', t, s, eid}
    elseif st.hot and s < cool_at then
      st.hot = false
      out[#out + 1] = {lead, 'lead_cooled', t, s, eid}
    end
  end
end
for _, lead in ipairs(order) do
  redis.call('SET', prefix .. 'h:{' .. lead .. '}', cmsgpack.pack(states[lead]))
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""


class Fields:
    """``get(name)`` over a raw event dict, as ``LeadEvent.field_value`` reads fields."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, name: str) -> Any:
        if name.startswith("properties."):
            return (self.data.get("properties") or {}).get(name[11:])
        return self.data.get(name)


def main() -> None:
    args = peer_args(__doc__.split("\n\n")[0])
    rules = load_rules(default_rules_path())
    rule_json = json.dumps([[r.points, r.half_life_ms, r.cap or False] for r in rules.rules])
    hot, cool = str(rules.thresholds.hot), str(rules.thresholds.cool)
    by_type: dict[str, list[int]] = {}  # event type -> indices of its rules
    for i, rule in enumerate(rules.rules):
        by_type.setdefault(str(rule.event), []).append(i)
    client = redis.Redis.from_url(args.redis_url)
    script = client.register_script(SCRIPT)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 1})
    consumer.subscribe([args.input])
    progress = Progress(args.expected, args.status)
    deadline = time.monotonic() + 1800
    while not progress.complete and time.monotonic() < deadline:
        messages = [m for m in consumer.consume(2000, timeout=0.05) if not m.error()]
        if not messages:
            continue
        progress.consumed()
        rows = []
        for message in messages:
            data = orjson.loads(message.value() or b"{}")
            get = Fields(data).get
            matched = [i + 1 for i in by_type.get(data["type"], ()) if rules.rules[i].matches(get)]
            rows.append(
                [data["lead_id"], data["event_id"], parse_time_ms(data["occurred_at"]), matched]
            )
        crossings = orjson.loads(
            script(args=[args.prefix, rule_json, hot, cool, orjson.dumps(rows)])
        )
        for lead, kind, at, score, trigger in crossings:
            record = {
                "lead_id": lead,
                "score": score,
                "occurred_at": iso_ms(int(at)),
                "trigger_event_id": trigger or None,
                "type": kind,
            }
            producer.produce(args.hot, orjson.dumps(record), lead.encode())
        if producer.flush(60) != 0:
            raise RuntimeError("crossings not acknowledged")
        consumer.commit(asynchronous=False)
        progress.processed += len(messages)
        progress.crossings += len(crossings)
    progress.write()
    consumer.close()
    client.close()


if __name__ == "__main__":
    main()
