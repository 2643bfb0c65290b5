"""Seeded synthetic trajectories, shaped like the dev data (tau2-bench customer-service runs).

    python -m benchmarks.synth --steps 1000000 --seed 7 --out benchmarks/data/synth-1m.jsonl
    python -m benchmarks.synth --steps 1000000 --seed 7 --out benchmarks/data/synth-1m.parquet

What it mimics (measured on /work/shared/data/dev/trajectories.jsonl): ~37 steps per
trajectory (llm ~45%, tool ~40%, user ~15%), 51 tool names with a skewed popularity, tool
arguments as JSON text (~25 chars), tool results as JSON text (median ~130 chars, long tail
to a few KB), user turns ~150 chars, llm turns empty (tool call) or ~120 chars of text,
~1.5% of tool steps failing (``is_error`` + an ``Error: ...`` result), per-step latency,
token and cost fields under the dev data's names (``latency_ms``, ``tokens_prompt``...), an
``outcome`` with success (~70%), reward and judge scores, and a ``meta`` object of ~17
fields (nested ``provenance``, lists). On top of the dev data it adds what a production
trace has: several agents and agent versions, models, sessions, tags and timestamps.

Output is deterministic for ``(steps, seed)``: the same bytes every run. The Parquet variant
holds the same records, one row per trajectory: ``steps`` is ``list<struct>``, ``outcome``
and ``meta`` are structs, ``scores`` a map, times ``timestamp[us, UTC]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

DATA_DIR = Path(__file__).resolve().parent / "data"
BASE_TIME_US = 1_754_000_000 * 1_000_000  # 2025-07-31T22:13:20Z

# -- vocabulary ------------------------------------------------------------------------------

RETAIL_TOOLS = [
    "find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details",
    "get_order_details", "get_product_details", "list_all_product_types",
    "modify_pending_order_items", "modify_pending_order_address",
    "modify_pending_order_payment", "modify_user_address", "cancel_pending_order",
    "return_delivered_order_items", "exchange_delivered_order_items", "calculate",
    "transfer_to_human_agents",
]
TELECOM_TOOLS = [
    "get_details_by_id", "can_send_mms", "get_customer_by_phone", "check_network_status",
    "reboot_device", "check_status_bar", "run_speed_test", "check_apn_settings",
    "get_data_usage", "toggle_airplane_mode", "grant_app_permission", "check_app_permissions",
    "toggle_data", "check_sim_status", "check_wifi_calling_status",
    "set_network_mode_preference", "reset_apn_settings", "get_bills_for_customer",
    "toggle_roaming", "reseat_sim_card", "check_network_mode_preference", "resume_line",
    "enable_roaming", "send_payment_request", "make_payment", "check_data_restriction_status",
    "check_payment_request", "refuel_data", "toggle_wifi_calling", "toggle_data_saver_mode",
    "check_vpn_status", "check_installed_apps", "disconnect_vpn", "check_app_status",
    "set_apn_settings", "check_wifi_status", "transfer_to_human_agents",
]
AIRLINE_TOOLS = [
    "search_direct_flight", "get_reservation_details", "update_reservation_flights",
    "cancel_reservation", "get_user_details", "calculate", "transfer_to_human_agents",
]
DOMAINS = {"retail": RETAIL_TOOLS, "telecom": TELECOM_TOOLS, "airline": AIRLINE_TOOLS}
DOMAIN_WEIGHTS = [0.35, 0.45, 0.20]

# (agent, versions, model, implementation, success rate)
AGENTS = [
    ("support-agent", ["1.4.0", "1.5.2", "2.0.0"], "gpt-4.1", "llm_agent", 0.72),
    ("support-agent-sft", ["0.9.1", "1.0.0"], "ft:gpt-4.1-2025-04-14:acme:tau2-sft:BzrY",
     "llm_agent", 0.78),
    ("react-agent", ["3.1.0", "3.2.0", "3.2.1"], "claude-sonnet-4", "react", 0.70),
    ("planner-executor", ["0.3.0", "0.4.0"], "o4-mini", "plan_execute", 0.61),
    ("cheap-router", ["1.0.0"], "gpt-4.1-mini", "llm_agent", 0.55),
]
AGENT_WEIGHTS = [0.3, 0.2, 0.2, 0.15, 0.15]
TERMINATIONS = ["user_stop", "agent_stop", "max_steps", "transfer"]
MODES = ["default", "persona", "no_user_tools"]

WORDS = (
    "i you we my your our the a an to of for and or but with from on in at by about this that "
    "order account card gift balance refund return exchange payment method visa mastercard "
    "amex paypal address street city zip phone number line plan data roaming mms sms wifi "
    "calling network signal speed test device sim apn settings airplane mode reboot restart "
    "flight reservation booking seat baggage passenger certificate cancel change update "
    "modify check verify confirm please thanks thank help need want would like could can "
    "should will not no yes sure okay great sorry understand problem issue working broken "
    "damaged delivered pending shipped item items product price total amount charge bill "
    "overdue pay paid due date today tomorrow week month recent last first again still also "
    "just really very quickly soon now time email name user customer agent support human "
    "transfer details information status available option options new old other same both "
    "all any some more less back here there when where why how what which who is are was "
    "were be been have has had do does did get got make made send sent see look find found "
    "know think tell let go going come use used try tried set turn on off enable disable "
    "app permission storage camera location message messages internet slow fast bars "
    "service outage area home work travel abroad trip hotel economy business basic cabin"
).split()

FIRST = ["Isabella", "Sofia", "Liam", "Noah", "Emma", "Olivia", "Ava", "Mia", "Lucas", "Ethan",
         "Yusuf", "Mei", "Aarav", "Fatima", "Omar", "Chen", "Lena", "Mateo", "Amara", "Kenji"]
LAST = ["Lopez", "Li", "Smith", "Garcia", "Kim", "Nguyen", "Patel", "Brown", "Silva", "Khan",
        "Rossi", "Müller", "Ito", "Okafor", "Haddad", "Novak", "Dubois", "Santos", "Ahmed", "Cohen"]
PERSONAS = [
    "You are a young college student under the pressure of final exams, so you are a bit "
    "anxious and want to get things done quickly.",
    "You are a retired teacher who is patient but not very familiar with technology.",
    "You are a busy professional; you answer briefly and expect the agent to be efficient.",
    "You are polite but firm, and you do not accept an answer without a reason.",
    "You are traveling abroad and your phone is your only way to reach your family.",
]
GOALS = {
    "retail": [
        "You want to return the {item} from your recent order because it arrived damaged, "
        "and get the refund to your original payment method.",
        "You want to know how much balance your gift card has, and change the payment method "
        "of your pending order to {card}.",
        "You want to exchange the {item} you received for the same model in a different color.",
        "You want to cancel your pending order {order} because you ordered it by mistake.",
        "You moved and want to update the shipping address of all your pending orders.",
    ],
    "telecom": [
        "Your phone shows no mobile data even though you paid your bill; you want data back.",
        "You cannot send MMS messages to your friends; you want to fix it today.",
        "Your internet is very slow; you want a speed above {speed} Mbps.",
        "You are abroad and roaming does not work; you want to enable it and get online.",
        "You have an overdue bill of ${amount} and want to pay it and resume your line.",
    ],
    "airline": [
        "You want to change your flight {flight} to a later one on the same day.",
        "You want to add {bags} checked bags to your reservation {reservation}.",
        "You want to cancel reservation {reservation} and get a refund; your trip was cancelled.",
        "You want to book a one-way flight from {city} to {city2} next {day}.",
    ],
}
ITEMS = ["bicycle", "desk lamp", "water bottle", "mechanical keyboard", "hiking boots",
         "office chair", "bluetooth speaker", "tea kettle", "backpack", "smart watch"]
CITIES = ["JFK", "SFO", "LAX", "ORD", "SEA", "BOS", "MIA", "DEN", "ATL", "PHX"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
ERRORS = ["Error: Order not found", "Error: Non-delivered order cannot be returned",
          "Error: user not found", "Error: payment method not found",
          "Error: reservation cannot be modified", "Error: invalid phone number",
          "Error: insufficient gift card balance", "Error: tool timed out after 30s"]
GREETINGS = ["Hi! How can I help you today?", "Hello! What can I do for you today?",
             "Hi there, thanks for reaching out. How can I help?"]

# The Parquet layout of a record (JSONL holds the same values; times as ISO 8601 text).
TS = pa.timestamp("us", tz="UTC")
STEP_TYPE = pa.struct([
    ("index", pa.int32()), ("kind", pa.string()), ("name", pa.string()),
    ("input", pa.string()), ("output", pa.string()), ("actor", pa.string()),
    ("started_at", TS), ("latency_ms", pa.float64()), ("tokens", pa.int64()),
    ("tokens_prompt", pa.int64()), ("tokens_completion", pa.int64()),
    ("cost_usd", pa.float64()), ("n_tool_calls", pa.int32()), ("is_error", pa.bool_()),
])
META_TYPE = pa.struct([
    ("domain", pa.string()), ("source_task_id", pa.string()), ("canonical_task_id", pa.string()),
    ("trial", pa.int32()), ("mode", pa.string()), ("agent_implementation", pa.string()),
    ("user_simulator", pa.string()), ("persona_level", pa.int32()),
    ("expected_actions", pa.list_(pa.string())), ("termination_reason", pa.string()),
    ("duration_s", pa.float64()), ("agent_cost_usd", pa.float64()),
    ("user_cost_usd", pa.float64()), ("db_match", pa.bool_()),
    ("reward_basis", pa.list_(pa.string())), ("first_user_message", pa.string()),
    ("simulation_id", pa.string()),
    ("provenance", pa.struct([("repo", pa.string()), ("commit", pa.string()),
                              ("license", pa.string())])),
])
PARQUET_SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("source", pa.string()), ("task", pa.string()),
    ("agent", pa.string()), ("agent_version", pa.string()), ("model", pa.string()),
    ("session_id", pa.string()), ("started_at", TS), ("ended_at", TS),
    ("tags", pa.list_(pa.string())),
    ("steps", pa.list_(STEP_TYPE)),
    ("outcome", pa.struct([("success", pa.bool_()), ("reward", pa.float64()),
                           ("scores", pa.map_(pa.string(), pa.float64()))])),
    ("meta", META_TYPE),
])


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Generator:
    """Yields trajectory dicts; ``iso_times`` renders times as ISO text (JSONL), else as
    ``datetime`` (Parquet). Both forms consume the random stream identically."""

    def __init__(self, seed: int, iso_times: bool = True):
        self.rng = random.Random(seed)
        self.iso = iso_times
        rng = self.rng
        # Pools built once (deterministically): sentences and tool weights.
        self.sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 16))).capitalize() + "."
            for _ in range(20000)
        ]
        self.tool_weights = {d: [1.0 / (i + 1) ** 1.1 for i in range(len(t))]
                             for d, t in DOMAINS.items()}
        self.n_tasks = {"retail": 115, "telecom": 2285, "airline": 50}

    # -- text helpers ----------------------------------------------------------------------
    def _text(self, lo: int, hi: int) -> str:
        rng, s = self.rng, self.sentences
        return " ".join(s[rng.randrange(20000)] for _ in range(rng.randint(lo, hi)))

    def _id(self, prefix: str, digits: int = 7) -> str:
        return f"{prefix}{self.rng.randrange(10 ** (digits - 1), 10 ** digits)}"

    def _task(self, domain: str, name: str) -> str:
        rng = self.rng
        goal = rng.choice(GOALS[domain]).format(
            item=rng.choice(ITEMS), card=rng.choice(["visa", "mastercard", "amex"]),
            order=self._id("#W"), speed=rng.choice([50, 100, 200]), amount=rng.randint(20, 400),
            flight=f"HAT{rng.randint(1, 300):03d}", bags=rng.randint(1, 3),
            reservation=self._id("R", 6), city=rng.choice(CITIES), city2=rng.choice(CITIES),
            day=rng.choice(DAYS))
        first, last = name.split(" ", 1)
        who = (f"You are {name}, and your email address is {first.lower()}.{last.lower()}"
               f"{rng.randint(100, 9999)}@example.com.")
        return f"{goal}\n{who}\n{rng.choice(PERSONAS)} {self._text(0, 2)}".rstrip()

    def _tool_io(self, tool: str, user: str) -> tuple[str, str]:
        rng = self.rng
        if tool.startswith(("find_user", "get_user", "get_customer")):
            args = ({"user_id": user} if tool == "get_user_details"
                    else {"email": f"{user}@example.com"})
        elif "order" in tool:
            args = {"order_id": self._id("#W")}
            if "items" in tool:
                args["item_ids"] = [self._id("", 10) for _ in range(rng.randint(1, 3))]
        elif "reservation" in tool:
            args = {"reservation_id": self._id("R", 6)}
        elif "flight" in tool:
            args = {"origin": rng.choice(CITIES), "destination": rng.choice(CITIES),
                    "date": f"2024-05-{rng.randint(10, 28)}"}
        elif tool.startswith(("get_details", "get_bills", "get_data", "resume", "refuel",
                              "send_payment", "make_payment", "check_payment")):
            args = {"customer_id": self._id("C", 6)}
        elif tool == "calculate":
            a, b, c = rng.randint(10, 999), rng.randint(0, 99), rng.randint(1, 99)
            args = {"expression": f"{a}.{b} - {c}"}
        else:
            args = {}
        # Results: mostly short, sometimes a large record (the dev data's long tail).
        r = rng.random()
        if r < 0.35:
            number = f"{rng.randint(1, 500)}.{rng.randint(0, 99)}"
            out = rng.choice(["true", "false", "OK", user, number,
                              "Done.", f"Status: {rng.choice(['connected', 'active', 'ok'])}"])
        elif r < 0.85:
            out = orjson.dumps({"id": self._id("", 8), "status": rng.choice(
                ["pending", "delivered", "active", "suspended", "processed"]),
                "note": self._text(1, 3)}).decode()
        else:
            items = [{"item_id": self._id("", 10), "name": rng.choice(ITEMS),
                      "price": round(rng.uniform(5, 900), 2),
                      "options": {"color": rng.choice(["red", "blue", "black"]),
                                  "size": rng.choice(["S", "M", "L"])}}
                     for _ in range(rng.randint(2, 24))]
            out = orjson.dumps({"user_id": user, "items": items,
                                "payment_history": [{"amount": round(rng.uniform(5, 900), 2),
                                                     "transaction_type": "payment"}]}).decode()
        return (orjson.dumps(args).decode() if args else "{}"), out

    def _time(self, us: int) -> Any:
        return _iso(us) if self.iso else datetime.fromtimestamp(us / 1e6, UTC)

    # -- one trajectory --------------------------------------------------------------------
    def trajectory(self, n: int, n_steps: int) -> dict[str, Any]:
        rng = self.rng
        domain = rng.choices(list(DOMAINS), DOMAIN_WEIGHTS)[0]
        tools, weights = DOMAINS[domain], self.tool_weights[domain]
        agent, versions, model, impl, p_success = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        version = rng.choice(versions)
        task_no = rng.randrange(self.n_tasks[domain])
        trial = rng.randrange(4)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        user = f"{name.split()[0].lower()}_{name.split()[1].lower()}_{rng.randint(1000, 9999)}"
        task = self._task(domain, name)
        t = BASE_TIME_US + n * 7_000_000 + rng.randrange(5_000_000)
        start = t
        steps: list[dict[str, Any]] = []
        prompt = rng.randint(2500, 4000)
        agent_cost = user_cost = 0.0
        expected: list[str] = []
        pending_tools = 0
        first_user = ""
        for i in range(n_steps):
            if i == 0:
                kind = "llm"
            elif i == 1 or (pending_tools == 0 and steps[-1]["kind"] == "llm"
                            and steps[-1]["n_tool_calls"] is None):
                kind = "user"
            elif pending_tools:
                kind = "tool"
            else:
                kind = "llm"
            step: dict[str, Any] = {"index": i, "kind": kind, "name": None, "input": "",
                                    "output": "", "actor": "user" if kind == "user" else "agent",
                                    "started_at": self._time(t)}
            if kind == "llm":
                latency = round(rng.uniform(200, 2500), 1)
                completion = rng.randint(15, 120)
                prompt += rng.randint(20, 300)
                cost = round(prompt * 2e-6 + completion * 8e-6, 6)
                step.update(latency_ms=latency, tokens=prompt + completion, tokens_prompt=prompt,
                            tokens_completion=completion, cost_usd=cost)
                if i == 0:
                    step["output"] = rng.choice(GREETINGS)
                elif rng.random() < 0.7:
                    pending_tools = 1 if rng.random() < 0.75 else 2
                    step["n_tool_calls"] = pending_tools
                else:
                    step["output"] = self._text(2, 5)
                agent_cost += cost
            elif kind == "user":
                text = self._text(1, 4)
                if not first_user:
                    first_user = text
                tokens = rng.randint(300, 900)
                cost = round(tokens * 2.4e-6, 6)
                step.update(input=text, latency_ms=round(rng.uniform(300, 1500), 1),
                            tokens=tokens, cost_usd=cost)
                user_cost += cost
            else:
                tool = tools[min(int(rng.paretovariate(1.0)) - 1, len(tools) - 1)] \
                    if rng.random() < 0.5 else rng.choices(tools, weights)[0]
                args, out = self._tool_io(tool, user)
                step.update(name=tool, input=args, latency_ms=round(rng.uniform(0.03, 900), 3))
                if rng.random() < 0.015:
                    step["output"] = rng.choice(ERRORS)
                    step["is_error"] = True
                else:
                    step["output"] = out
                if tool not in expected and len(expected) < 6:
                    expected.append(tool)
                pending_tools -= 1
            step.setdefault("n_tool_calls", None)
            t += int(step["latency_ms"] * 1000) + rng.randrange(50_000)
            steps.append(step)
        for s in steps:  # drop absent optional fields (JSONL writes only what a step has)
            if s["n_tool_calls"] is None:
                del s["n_tool_calls"]
        success = rng.random() < p_success
        reward = 1.0 if success else round(rng.choice([0.0, 0.0, 0.25, 0.5]), 2)
        return {
            "trajectory_id": f"synth/{domain}/{agent}/task{task_no}/trial{trial}/{n:07d}",
            "source": "synth",
            "task": task,
            "agent": agent,
            "agent_version": version,
            "model": model,
            "session_id": f"sess-{rng.getrandbits(64):016x}",
            "started_at": self._time(start),
            "ended_at": self._time(t),
            "tags": [domain, f"trial{trial}"] + (["regression"] if rng.random() < 0.1 else []),
            "steps": steps,
            "outcome": {"success": success, "reward": reward,
                        "scores": {"db_match": 1.0 if success else 0.0,
                                   "communicate": round(rng.random(), 3)}},
            "meta": {
                "domain": domain,
                "source_task_id": f"synth:{domain}:{task_no}",
                "canonical_task_id": f"synth:{domain}:{task_no}",
                "trial": trial,
                "mode": rng.choice(MODES),
                "agent_implementation": impl,
                "user_simulator": "gpt-4.1",
                "persona_level": rng.randint(1, 3),
                "expected_actions": expected,
                "termination_reason": rng.choice(TERMINATIONS),
                "duration_s": round((t - start) / 1e6, 3),
                "agent_cost_usd": round(agent_cost, 6),
                "user_cost_usd": round(user_cost, 6),
                "db_match": success,
                "reward_basis": ["DB", "COMMUNICATE"],
                "first_user_message": first_user,
                "simulation_id": f"{rng.getrandbits(128):032x}",
                "provenance": {"repo": "acme/agent-runs", "commit": f"{rng.getrandbits(160):040x}",
                               "license": "Apache-2.0"},
            },
        }

    def trajectories(self, total_steps: int) -> Iterator[dict[str, Any]]:
        """Trajectories holding exactly ``total_steps`` steps (the last one may be short)."""
        done = n = 0
        while done < total_steps:
            k = max(4, min(150, int(self.rng.gammavariate(4.0, 37.5 / 4.0))))
            k = min(k, total_steps - done)
            yield self.trajectory(n, k)
            done += k
            n += 1


# -- writers -------------------------------------------------------------------------------

def write_jsonl(path: Path, steps: int, seed: int) -> int:
    n = 0
    with open(path, "wb") as f:
        buf = []
        for rec in Generator(seed, iso_times=True).trajectories(steps):
            buf.append(orjson.dumps(rec))
            n += 1
            if len(buf) >= 1000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return n


def write_parquet(path: Path, steps: int, seed: int, row_group: int = 1000) -> int:
    n = 0
    with pq.ParquetWriter(path, PARQUET_SCHEMA, compression="zstd") as w:
        buf: list[dict[str, Any]] = []
        for rec in Generator(seed, iso_times=False).trajectories(steps):
            rec["outcome"]["scores"] = list(rec["outcome"]["scores"].items())
            buf.append(rec)
            n += 1
            if len(buf) >= row_group:
                w.write_table(pa.Table.from_pylist(buf, schema=PARQUET_SCHEMA))
                buf = []
        if buf:
            w.write_table(pa.Table.from_pylist(buf, schema=PARQUET_SCHEMA))
    return n


def generate(out: Path, steps: int, seed: int, fmt: str) -> int:
    """Write the file atomically (a temp file renamed into place); returns trajectories."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        n = (write_parquet if fmt == "parquet" else write_jsonl)(tmp, steps, seed)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def label(steps: int) -> str:
    if steps % 1_000_000 == 0:
        return f"{steps // 1_000_000}m"
    if steps % 1000 == 0:
        return f"{steps // 1000}k"
    return str(steps)


def ensure(steps: int, seed: int, fmt: str) -> Path:
    """The cached file ``benchmarks/data/synth-<steps>-s<seed>.<fmt>``, generated if missing."""
    ext = "parquet" if fmt == "parquet" else "jsonl"
    path = DATA_DIR / f"synth-{label(steps)}-s{seed}.{ext}"
    if not path.exists():
        t0 = time.perf_counter()
        n = generate(path, steps, seed, fmt)
        print(f"generated {path} ({n} trajectories, {steps} steps) in "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synth",
                                description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1_000_000, help="total steps (default 1000000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default benchmarks/data/synth-<steps>-s<seed>.<format>)")
    p.add_argument("--format", choices=["jsonl", "parquet"], default=None,
                   help="default: from the --out suffix, else jsonl")
    a = p.parse_args(argv)
    fmt = a.format or ("parquet" if a.out and a.out.suffix == ".parquet" else "jsonl")
    out = a.out or DATA_DIR / f"synth-{label(a.steps)}-s{a.seed}.{fmt}"
    if a.out and a.format and a.out.suffix not in (f".{fmt}",):
        p.error(f"--out {a.out} does not end in .{fmt}")
    t0 = time.perf_counter()
    n = generate(out, a.steps, a.seed, fmt)
    print(f"{out}: {n} trajectories, {a.steps} steps, {out.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
