"""A small LLM "server" with marks at every stage of every request, for flinch.

A Llama-style causal LM is built from a config with random weights (nothing is
downloaded), requests arrive at random intervals, are queued, batched by a worker, and
generate tokens with Hugging Face transformers. Marks (through $FLINCH_MARKS):

  server_recv   req=<id>           the request arrives
  enqueue       req=<id>           it is tokenized (CPU work) and queued
  dequeue       req=<id> batch=<n> the worker takes it
  infer_start   req=<id>           generate() is called for its batch
  first_token   req=<id>           its first new token is on the host
  token         req=<id> n=<k>     each of its first 20 tokens
  done          req=<id> tokens=<n>
  calib_start / calib_end          2 s idle with the model loaded (an idle window)

Run:  flinch record --out llm.flinch.csv -- python3 examples/llm/serve_sim.py
Env:  REQUESTS (default 16), MAX_BATCH (4), NEW_TOKENS (48), PROMPT (256), LAYERS (16),
      HIDDEN (2048), SEED (0), RATE (requests per second, 2.5)
"""

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

REQUESTS = int(os.environ.get("REQUESTS", "16"))
MAX_BATCH = int(os.environ.get("MAX_BATCH", "4"))
NEW_TOKENS = int(os.environ.get("NEW_TOKENS", "48"))
PROMPT = int(os.environ.get("PROMPT", "256"))
RATE = float(os.environ.get("RATE", "2.5"))
TOKEN_MARKS = 20

random.seed(int(os.environ.get("SEED", "0")))
torch.manual_seed(int(os.environ.get("SEED", "0")))
marks = Marks()


def build_model():
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=int(os.environ.get("HIDDEN", "2048")),
        intermediate_size=5632,
        num_hidden_layers=int(os.environ.get("LAYERS", "16")),
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=4096,
    )
    t = time.monotonic()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e6:.0f} M parameters, built in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return model


class MarkStreamer(BaseStreamer):
    """Marks first_token and the first TOKEN_MARKS tokens of each request in a batch."""

    def __init__(self, reqs):
        self.reqs = reqs
        self.calls = 0

    def put(self, value):
        self.calls += 1
        if self.calls == 1:
            return  # the prompt
        n = self.calls - 1
        t = time.monotonic_ns()
        for r in self.reqs:
            if n == 1:
                marks.mark("first_token", req=r, t_ns=t)
            if n <= TOKEN_MARKS:
                marks.mark("token", req=r, n=n, t_ns=t)

    def end(self):
        pass


def tokenize(prompt_len):
    # stands in for a tokenizer: a little CPU work per request
    ids = [random.randrange(32000) for _ in range(prompt_len)]
    s = 0
    for i in ids:
        s = (s * 31 + i) % 1000003
    return ids


def arrivals(q):
    for i in range(REQUESTS):
        time.sleep(random.expovariate(RATE))
        marks.mark("server_recv", req=i)
        ids = tokenize(PROMPT)
        marks.mark("enqueue", req=i)
        q.put((i, ids))
    q.put(None)


def worker(model, q):
    done = False
    while not done:
        item = q.get()
        if item is None:
            break
        batch = [item]
        while len(batch) < MAX_BATCH:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                done = True
                break
            batch.append(nxt)
        reqs = [r for r, _ in batch]
        for r in reqs:
            marks.mark("dequeue", req=r, batch=len(batch))
        input_ids = torch.tensor([ids for _, ids in batch], device="cuda")
        attn = torch.ones_like(input_ids)
        t = time.monotonic_ns()
        for r in reqs:
            marks.mark("infer_start", req=r, t_ns=t)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attn,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
                streamer=MarkStreamer(reqs),
            )
        torch.cuda.synchronize()
        t = time.monotonic_ns()
        for r in reqs:
            marks.mark("done", req=r, tokens=out.shape[1] - input_ids.shape[1], t_ns=t)


def main():
    model = build_model()
    time.sleep(0.5)
    # 2 s idle with the model loaded and the CUDA context open: an idle window for
    # `flinch analyze --idle-window calib_start..calib_end`
    marks.mark("calib_start")
    time.sleep(2.0)
    marks.mark("calib_end")
    q = queue.Queue()
    a = threading.Thread(target=arrivals, args=(q,))
    a.start()
    worker(model, q)
    a.join()
    time.sleep(1.0)
    print("marks:", marks.stats(), file=sys.stderr)


if __name__ == "__main__":
    main()
