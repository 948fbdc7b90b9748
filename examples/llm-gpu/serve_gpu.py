"""An LLM "server" in which the GPU is the bottleneck, with marks at every stage, for flinch.

A wide Llama-style causal LM (about 27 B parameters in bf16 by default: 8 layers of width
16384, random weights built from a config, nothing downloaded) serves requests that arrive
faster than it can answer them, in two waves; the second comes a few seconds after the
server has answered the first, so the server also visibly waits. Prefill of a batch
(16 × 512 tokens) and batched decode (16 sequences) are bound by the GPU: each decode step
reads the whole 54 GB of weights from HBM, far longer than the CPU needs to launch it.

Stages and marks (through $FLINCH_MARKS; `req=<id>` on every per-request mark):

  server_recv   req                  the request arrives
  enqueue       req                  it is pre-processed (tokenizer and safety-filter
                                     stand-in: ~150 ms of CPU in a thread pool) and queued
  dequeue       req batch=<n>        the worker takes it into a batch
  infer_start   req                  generate() is called for its batch
  first_token   req                  its first new token is on the host (end of prefill)
  token         req n=<k>            every new token, k = 1 .. NEW_TOKENS
  done          req tokens=<n>       its batch finished
  wait_start / wait_end              the worker found the queue empty and waited
  calib_start / calib_end            3 s idle with the model loaded (an idle window)
  warmup_start / warmup_end          one batch of the served shape before calibration

Run:  flinch record --nvml-energy-interval 100ms --out llm-gpu.flinch.csv -- \
          python3 examples/llm-gpu/serve_gpu.py
Env:  LAYERS (8), HIDDEN (16384), INTERMEDIATE (53248), HEADS (128), KV_HEADS (8),
      MAX_BATCH (16), PROMPT (512), NEW_TOKENS (96), WAVES ("48,32": requests per wave),
      RATE (requests per second within a wave, 16), PAUSE_S (3: from the server answering
      one wave to the next wave), PREPROCESS_MS (150), DEADLINE_S (120: stop taking
      batches after this long serving),
      SEED (0)
When the model does not fit, it is rebuilt with half the layers (and so on), and the size
used is printed.
"""

import concurrent.futures
import hashlib
import os
import queue
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from flinch_marks import Marks  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402


def env_int(name, default):
    return int(os.environ.get(name, str(default)))


LAYERS = env_int("LAYERS", 8)
HIDDEN = env_int("HIDDEN", 16384)
INTERMEDIATE = env_int("INTERMEDIATE", 53248)
HEADS = env_int("HEADS", 128)
KV_HEADS = env_int("KV_HEADS", 8)
MAX_BATCH = env_int("MAX_BATCH", 16)
PROMPT = env_int("PROMPT", 512)
NEW_TOKENS = env_int("NEW_TOKENS", 96)
WAVES = [int(x) for x in os.environ.get("WAVES", "48,32").split(",") if x.strip()]
RATE = float(os.environ.get("RATE", "16"))
PAUSE_S = float(os.environ.get("PAUSE_S", "3"))
PREPROCESS_MS = float(os.environ.get("PREPROCESS_MS", "150"))
DEADLINE_S = float(os.environ.get("DEADLINE_S", "120"))
VOCAB = 32000

random.seed(env_int("SEED", 0))
torch.manual_seed(env_int("SEED", 0))
marks = Marks()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_model(layers):
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=4096,
    )
    t = time.monotonic()
    # Built directly in bf16 on the GPU: an fp32 copy of a 27 B model would not fit.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(torch.bfloat16)
    model.eval()
    torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n / 1e9:.1f} B parameters ({layers} layers, hidden {HIDDEN}, "
        f"intermediate {INTERMEDIATE}), {torch.cuda.memory_allocated() / 2**30:.1f} GiB, "
        f"built in {time.monotonic() - t:.1f} s"
    )
    return model


def build_fitting_model():
    layers = LAYERS
    while True:
        try:
            return build_model(layers)
        except torch.cuda.OutOfMemoryError as e:
            if layers <= 1:
                raise
            log(f"model with {layers} layers does not fit ({e}); trying {layers // 2}")
            layers //= 2
            torch.cuda.empty_cache()


class MarkStreamer(BaseStreamer):
    """Marks first_token and every token of each request of a batch."""

    def __init__(self, reqs, step_times=None):
        self.reqs = reqs
        self.calls = 0
        self.step_times = step_times

    def put(self, value):
        self.calls += 1
        if self.calls == 1:
            return  # the prompt
        n = self.calls - 1
        t = time.monotonic_ns()
        if self.step_times is not None:
            self.step_times.append(t)
        for r in self.reqs:
            if n == 1:
                marks.mark("first_token", req=r, t_ns=t)
            marks.mark("token", req=r, n=n, t_ns=t)

    def end(self):
        pass


_junk = os.urandom(1 << 20)


def preprocess(prompt_len):
    """Stands in for a tokenizer and a safety filter: PREPROCESS_MS of CPU time in hashlib,
    which releases the GIL, so the GPU worker is not held up."""
    t_end = time.thread_time() + PREPROCESS_MS / 1e3
    h = hashlib.sha256()
    while time.thread_time() < t_end:
        h.update(_junk)
    return [random.randrange(VOCAB) for _ in range(prompt_len)]


def generate(model, input_ids, new_tokens, streamer):
    with torch.no_grad():
        return model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            streamer=streamer,
        )


def arrivals(q, answered):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    req = 0
    futures = []

    def handle(i):
        marks.mark("server_recv", req=i)
        ids = preprocess(PROMPT)
        marks.mark("enqueue", req=i)
        q.put((i, ids))

    for w, n in enumerate(WAVES):
        if w > 0:
            # the next wave comes PAUSE_S after the server has answered this one, so that
            # the server visibly waits in between
            while answered[0] < req:
                time.sleep(0.005)
            time.sleep(PAUSE_S)
        for _ in range(n):
            time.sleep(random.expovariate(RATE))
            futures.append(pool.submit(handle, req))
            req += 1
    for f in futures:
        f.result()
    pool.shutdown()
    q.put(None)


def worker(model, q, t0, answered):
    served = 0
    finished = False
    while not finished:
        try:
            item = q.get_nowait()
        except queue.Empty:
            marks.mark("wait_start")
            item = q.get()
            marks.mark("wait_end")
        if item is None:
            break
        batch = [item]
        while len(batch) < MAX_BATCH:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                finished = True
                break
            batch.append(nxt)
        reqs = [r for r, _ in batch]
        for r in reqs:
            marks.mark("dequeue", req=r, batch=len(batch))
        input_ids = torch.tensor([ids for _, ids in batch], device="cuda")
        t = time.monotonic_ns()
        for r in reqs:
            marks.mark("infer_start", req=r, t_ns=t)
        out = generate(model, input_ids, NEW_TOKENS, MarkStreamer(reqs))
        torch.cuda.synchronize()
        t = time.monotonic_ns()
        for r in reqs:
            marks.mark("done", req=r, tokens=out.shape[1] - input_ids.shape[1], t_ns=t)
        served += len(reqs)
        answered[0] = served
        if time.monotonic() - t0 > DEADLINE_S:
            log(f"deadline of {DEADLINE_S} s reached after {served} requests: stopping")
            break
    return served


def main():
    t_start = time.monotonic()
    model = build_fitting_model()
    # One batch of the served shape: cuBLAS and attention kernels chosen, memory pools
    # grown, so that calibration sees the idle level of a warm server.
    marks.mark("warmup_start")
    ids = torch.randint(0, VOCAB, (MAX_BATCH, PROMPT), device="cuda")
    steps = []
    t = time.monotonic()
    generate(model, ids, 16, MarkStreamer([], steps))
    torch.cuda.synchronize()
    marks.mark("warmup_end")
    d = [(b - a) / 1e6 for a, b in zip(steps, steps[1:])]
    d.sort()
    log(
        f"warm-up: {time.monotonic() - t:.2f} s for prefill {MAX_BATCH}x{PROMPT} + 16 tokens; "
        f"decode step median {d[len(d) // 2]:.1f} ms" if d else "warm-up done"
    )
    del ids
    time.sleep(1.5)
    # 3 s idle with the model loaded and the CUDA context open
    marks.mark("calib_start")
    time.sleep(3.0)
    marks.mark("calib_end")
    q = queue.Queue()
    answered = [0]
    a = threading.Thread(target=arrivals, args=(q, answered), daemon=True)
    t0 = time.monotonic()
    a.start()
    served = worker(model, q, t0, answered)
    log(f"served {served} requests in {time.monotonic() - t0:.1f} s (whole run {time.monotonic() - t_start:.1f} s)")
    time.sleep(1.0)
    log("marks:", marks.stats())


if __name__ == "__main__":
    main()
