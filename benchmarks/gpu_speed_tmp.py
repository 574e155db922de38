import sys, time, torch
sys.path.insert(0, ".")
from harness.networks import QNetwork
from harness.finetune import soft_targets
from harness.population import finetune_population
from harness.space import Regime
torch.set_num_threads(4)
for hidden in (64, 1024):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10000, 8, generator=g)
    kids = [QNetwork(8, 4, hidden).eval() for _ in range(7)]
    with torch.no_grad(): p = soft_targets(kids[0](x))
    reg = Regime("t", epochs=2, lr=1e-3)
    for dev in ("cpu", "cuda"):
        xd, pd = x.to(dev), p.to(dev)
        finetune_population(kids[:1], xd[:200], pd[:200], reg)  # warm-up
        if dev == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); r = finetune_population(kids, xd, pd, reg); el = time.perf_counter() - t
        steps = r[0].history["steps"]
        print(f"hidden {hidden} {dev}: 7 children x {steps} steps in {el:.2f} s = {1000*el/steps/7:.3f} ms/step/child", flush=True)
