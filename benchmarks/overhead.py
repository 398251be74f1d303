"""Overhead of lipnets layers against the same architecture in plain PyTorch and other libraries.

For each model it times a training step (zero_grad, forward, loss, backward, Adam step, project_) and an
eval-mode forward under no_grad, for the plain twin (nn.Linear / nn.Conv2d and the same activation),
every lipnets norm, the exported model (`lipnets.export.to_plain`), monotonicnetworks (`direct_norm`),
deel-torchlip (SpectralLinear = spectral + Björck, FrobeniusLinear, SpectralConv2d) and orthogonium
(OrthoLinear), eager and under torch.compile. Twins are timed in interleaved rounds (each round times
every variant once with `blocked_autorange`). The clock is the thread's CPU time: with one torch thread
all work runs on the calling thread, and CPU time does not count the time the process waits while
other processes hold the cores (wall time on this shared machine varied 5x between runs). A ratio is the median over rounds of the per-round ratio
to the plain twin, so load from other processes that drifts between rounds cancels out. Peak training memory is the resident state (parameters,
gradients, optimizer state, buffers) plus the peak of live tensor allocations during one step, read from
the allocation events of `torch.profiler(profile_memory=True)`.

On a GPU (`--device cuda`) the clock is wall time with the device synchronised around each timed
block (torch.utils.benchmark does that) and peak memory is the CUDA allocator's peak during a step.
The digits section trains the convolutional networks of benchmarks/certify_images.py (8x8 images,
batch 128) and reports images per second of training against deel-torchlip's twin.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--quick] [--no-compile] [--write]
    python benchmarks/overhead.py --device cuda [--quick] [--write]
    PATH=.venv/bin:$PATH OMP_NUM_THREADS=1 python benchmarks/overhead.py --instructions [--write]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

import lipnets
from lipnets import GroupSort, LipschitzLinear
from lipnets.io.report import format_table

RESULTS = Path(__file__).parent / "results" / "overhead.md"
INSTRUCTIONS = Path(__file__).parent / "results" / "overhead-instructions.md"

DENSE_MODELS = {
    "lhcb": ("lhcb 4-20-20-20-1", (4, 20, 20, 20, 1), 1024),
    "mnist": ("mnist 784-512-512-512-10", (784, 512, 512, 512, 10), 256),
}
"""Section name: (title, widths, batch size)."""

DENSE_NORM_CHAINS = {
    "1": ("1", "1"),
    "inf": ("inf", "inf"),
    "1-inf": ("1-inf", "inf"),
    "2-inf": ("2-inf", "inf"),
    "2": ("2", "2"),
}
"""lipnets variant: (first layer norm, later layers' norm), chains that compose."""


@dataclass
class Variant:
    """A model factory, whether it trains (exported models only infer) and whether it is compiled."""

    build: Callable[[], nn.Module]
    trains: bool = True
    compiled: bool = False


def plain_mlp(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(len(widths) - 1):
        layers.append(nn.Linear(widths[index], widths[index + 1]))
        if index < len(widths) - 2:
            layers.append(GroupSort(2))
    return nn.Sequential(*layers)


def lipnets_mlp(widths: tuple[int, ...], first: str, rest: str, mode: str | None = None) -> nn.Sequential:
    model = plain_mlp(widths)
    for index, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            norm = first if index == 0 else rest
            model[index] = LipschitzLinear(layer.in_features, layer.out_features, norm=norm, mode=mode)
    return model


def swap_linears(model: nn.Sequential, make: Callable[[nn.Linear], nn.Module], activation: nn.Module | None = None) -> nn.Sequential:
    for index, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            model[index] = make(layer)
        elif activation is not None:
            model[index] = activation
    return model


def external_dense(widths: tuple[int, ...]) -> dict[str, Variant]:
    """The other libraries' dense layers, where they are installed."""
    variants: dict[str, Variant] = {}
    if importlib.util.find_spec("monotonicnetworks"):
        from monotonicnetworks import direct_norm

        for kind in ("one", "inf"):
            variants[f"monotonicnetworks direct_norm {kind}"] = Variant(
                lambda kind=kind: swap_linears(plain_mlp(widths), lambda layer: direct_norm(layer, kind=kind))
            )
    if importlib.util.find_spec("deel"):
        from deel import torchlip

        variants["deel-torchlip SpectralLinear (Björck)"] = Variant(
            lambda: swap_linears(
                plain_mlp(widths), lambda layer: torchlip.SpectralLinear(layer.in_features, layer.out_features), torchlip.GroupSort2()
            )
        )
        variants["deel-torchlip FrobeniusLinear"] = Variant(
            lambda: swap_linears(
                plain_mlp(widths), lambda layer: torchlip.FrobeniusLinear(layer.in_features, layer.out_features), torchlip.GroupSort2()
            )
        )
    if importlib.util.find_spec("orthogonium"):
        from orthogonium.layers.linear import OrthoLinear

        variants["orthogonium OrthoLinear"] = Variant(
            lambda: swap_linears(plain_mlp(widths), lambda layer: OrthoLinear(layer.in_features, layer.out_features))
        )
    return variants


def dense_variants(widths: tuple[int, ...], batch: int, compile_models: bool) -> dict[str, Variant]:
    variants = {"plain PyTorch": Variant(lambda: plain_mlp(widths))}
    for name, (first, rest) in DENSE_NORM_CHAINS.items():
        variants[f"lipnets {name}"] = Variant(lambda first=first, rest=rest: lipnets_mlp(widths, first, rest))
    variants["lipnets orthogonal reparam"] = Variant(lambda: lipnets_mlp(widths, "orthogonal", "orthogonal", "reparam"))
    variants["lipnets orthogonal project"] = Variant(lambda: lipnets_mlp(widths, "orthogonal", "orthogonal"))  # the default mode
    variants["lipnets inf exported"] = Variant(lambda: lipnets.export.to_plain(lipnets_mlp(widths, "inf", "inf")), trains=False)
    variants.update(external_dense(widths))
    if compile_models:
        for name in ("plain PyTorch", "lipnets inf", "lipnets orthogonal project", "lipnets inf exported"):
            variants[f"{name} (compiled)"] = Variant(variants[name].build, variants[name].trains, compiled=True)
    return variants


def conv_variants(compile_models: bool) -> dict[str, Variant] | None:
    """Two 3x3 convolutions and a dense head on 3x32x32 inputs, when lipnets has convolution layers."""
    if importlib.util.find_spec("lipnets.layers.conv") is None:
        return None
    from lipnets.layers.conv import LipschitzConv2d

    def net(conv: Callable[[int, int], nn.Module]) -> nn.Sequential:
        return nn.Sequential(conv(3, 32), GroupSort(2, dim=1), conv(32, 32), GroupSort(2, dim=1), nn.Flatten(), nn.Linear(32 * 32 * 32, 10))

    variants = {"plain nn.Conv2d": Variant(lambda: net(lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)))}
    modes = (("spectral", "reparam"), ("spectral", "project"), ("aol", "reparam"), ("orthogonal", "reparam"), ("orthogonal", "project"))
    for norm, mode in modes:
        variants[f"lipnets LipschitzConv2d {norm} {mode}"] = Variant(
            lambda norm=norm, mode=mode: net(lambda c_in, c_out: LipschitzConv2d(c_in, c_out, 3, padding=1, norm=norm, mode=mode))
        )
    variants["lipnets conv exported"] = Variant(
        lambda: lipnets.export.to_plain(net(lambda c_in, c_out: LipschitzConv2d(c_in, c_out, 3, padding=1, norm="aol"))), trains=False
    )
    if importlib.util.find_spec("deel"):
        from deel import torchlip

        variants["deel-torchlip SpectralConv2d"] = Variant(
            lambda: net(lambda c_in, c_out: torchlip.SpectralConv2d(c_in, c_out, 3, padding=1))
        )
    if importlib.util.find_spec("orthogonium"):
        from orthogonium.layers.conv.AOC.ortho_conv import AdaptiveOrthoConv2d

        variants["orthogonium AdaptiveOrthoConv2d"] = Variant(
            lambda: net(lambda c_in, c_out: AdaptiveOrthoConv2d(c_in, c_out, 3, padding=1, padding_mode="zeros"))
        )
    if compile_models:
        variants["plain nn.Conv2d (compiled)"] = Variant(variants["plain nn.Conv2d"].build, compiled=True)
    return variants


DIGITS_LAYERS = ("spectral", "orthogonal", "aol", "sll")
"""LipschitzConvNet layer types timed on the digits images, each with its default mode."""


def digits_variants() -> dict[str, Variant]:
    """The convolutional networks of certify_images.py on 8x8 digits: plain twin, lipnets layers, deel-torchlip."""
    from lipnets.models import LipschitzConvNet

    def convnet(layer: str) -> nn.Module:
        return LipschitzConvNet(1, 10, (8, 8), depth=3, width=32, layer=layer)

    def plain() -> nn.Module:  # the same architecture in torch layers, trainable
        return lipnets.export.to_plain(convnet("orthogonal")).requires_grad_(True)

    variants = {"plain PyTorch (exported orthogonal net)": Variant(plain)}
    for layer in DIGITS_LAYERS:
        variants[f"lipnets LipschitzConvNet {layer}"] = Variant(lambda layer=layer: convnet(layer))
    if importlib.util.find_spec("deel"):
        from certify_images import deel_model

        variants["deel-torchlip SpectralConv2d + SpectralLinear"] = Variant(lambda: deel_model(1, (8, 8), 32, 3, (1, 1, 1)))
    return variants


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool, *, keep_gradients: bool = False
) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """One optimizer step and its optimizer; lipnets.project_ is a no-op without mode="project" layers.

    keep_gradients zeroes gradients in place instead of freeing them, so that they count as resident
    state in the memory measurement.
    """
    model.train()
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.functional.cross_entropy if y.dtype == torch.long else nn.functional.mse_loss

    def step() -> None:
        optimizer.zero_grad(set_to_none=not keep_gradients)
        loss_fn(forward(x), y).backward()
        optimizer.step()
        lipnets.project_(model)

    return step, optimizer


def eval_forward(model: nn.Module, x: torch.Tensor, compiled: bool) -> Callable[[], None]:
    model.eval()
    forward = torch.compile(model) if compiled else model

    def run() -> None:
        with torch.no_grad():
            forward(x)

    return run


def resident_bytes(model: nn.Module, optimizer_state: dict) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [value for state in optimizer_state.values() for value in state.values() if torch.is_tensor(value)]
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_training_memory(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MiB: resident state before a step plus the peak of live allocations during it (eager)."""
    step, optimizer = train_step(model, x, y, compiled=False, keep_gradients=True)
    step()  # gradients and optimizer state now exist
    return peak_step_memory(step, resident_bytes(model, optimizer.state), x.device)


def peak_step_memory(step: Callable[[], object], resident: int, device: torch.device | None = None) -> float:
    """MiB: `resident` bytes plus the peak of live allocations during one call of `step`.

    On CUDA from the allocator's peak statistics; elsewhere from torch.profiler's memory events.
    """
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (resident + torch.cuda.max_memory_allocated(device) - before) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted(  # each op's own allocations minus frees, and the frees outside ops ("[memory]")
        (event.time_range.start, event.self_cpu_memory_usage) for event in profiler.events() if event.self_cpu_memory_usage
    )
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return (resident + peak) / 2**20


def time_variants(
    variants: dict[str, Variant], inputs: tuple[torch.Tensor, torch.Tensor], rounds: int, min_time: float, *, memory_peaks: bool = True
) -> list[dict]:
    """Train-step and eval-forward times of every variant on the inputs' device, with ratios to the first.

    memory_peaks: also measure each variant's peak training memory (a profiled step; --quick skips it).
    """
    x, y = inputs
    # every compiled model shares the code object of its forward wrapper, and past torch._dynamo's
    # recompile limit a model would silently run eagerly: start each table from an empty cache and fail
    # rather than time an eager model as a compiled one
    torch.compiler.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    calls: dict[tuple[str, str], Callable[[], None]] = {}
    memory: dict[str, float] = {}
    for name, variant in variants.items():
        torch.manual_seed(0)

        def build(variant: Variant = variant) -> nn.Module:
            return variant.build().to(x.device)

        if variant.trains:
            calls[name, "train"] = train_step(build(), x, y, variant.compiled)[0]
            if memory_peaks and not variant.compiled:
                memory[name] = peak_training_memory(build(), x, y)
        calls[name, "eval"] = eval_forward(build(), x, variant.compiled)
    for key, call in calls.items():  # warm-up, and compilation for compiled variants
        start = time.perf_counter()
        call(), call()
        if variants[key[0]].compiled:
            print(f"  compiled {key[0]} {key[1]} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    # CPU: the thread's CPU time; CUDA: wall time, which torch.utils.benchmark brackets with synchronisations
    clock = {"timer": time.thread_time} if x.device.type == "cpu" else {}
    for _ in range(rounds):
        for key, call in calls.items():
            timer = benchmark.Timer("call()", globals={"call": call}, num_threads=torch.get_num_threads(), **clock)
            samples[key].append(timer.blocked_autorange(min_run_time=min_time).median)
    base = next(iter(variants))

    def twin(name: str, kind: str) -> tuple[str, str]:
        """The plain twin a variant is compared with: the compiled one for compiled variants."""
        compiled_base = (f"{base} (compiled)", kind)
        return compiled_base if variants[name].compiled and compiled_base in samples else (base, kind)

    def ratio(name: str, kind: str) -> str:
        """Median over rounds of the per-round ratio (min-max in brackets): load that drifts between rounds cancels out."""
        ratios = [mine / plain for mine, plain in zip(samples[name, kind], samples[twin(name, kind)])]
        if name == base or (variants[name].compiled and twin(name, kind)[0] == name):
            return "1.00x"
        return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"

    rows = []
    for name in variants:
        trains = (name, "train") in samples
        train_seconds = statistics.median(samples[name, "train"]) if trains else None
        rows.append(
            {
                "variant": name,
                "train step ms": f"{1e3 * train_seconds:.3g}" if train_seconds else "-",
                "train ratio": ratio(name, "train") if trains else "-",
                "train samples/s": f"{len(x) / train_seconds:.0f}" if train_seconds else "-",
                "eval ms": f"{1e3 * statistics.median(samples[name, 'eval']):.3g}",
                "eval ratio": ratio(name, "eval"),
                "peak train MiB": f"{memory[name]:.3g}" if name in memory else "-",
                "memory ratio": f"{memory[name] / memory[base]:.2f}x" if name in memory else "-",
            }
        )
    return rows


COUNTED_VARIANTS = (
    "plain PyTorch",
    *(f"lipnets {name}" for name in DENSE_NORM_CHAINS),
    "lipnets orthogonal project",
    "lipnets inf exported",
    "monotonicnetworks direct_norm inf",
)
"""The variants of the dense tables whose instructions are counted: the defaults, and the closest peer."""


def instruction_rows(section: str, kinds: tuple[str, ...], number: int, jobs: int = 2) -> list[dict]:
    """Instructions per training step and eval forward under callgrind: immune to load from other processes.

    Each count runs in a fresh interpreter under valgrind (it must find torch and lipnets on PATH's
    python) that builds the variant as the timed tables do (`dense_variants`); `jobs` of them run at
    once, and a section takes tens of minutes. Instructions are not time: a pass over a weight larger
    than the cache costs more time per instruction than a matrix product does. They back the ratios
    where timing noise on a shared machine is larger than the differences that matter.
    """
    title, widths, batch = DENSE_MODELS[section]
    setup = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import torch, overhead\ntorch.manual_seed(0)\n"
        f"x = torch.randn({batch}, {widths[0]})\n"
        f"y = torch.randint(0, {widths[-1]}, ({batch},)) if {widths[-1]} > 1 else torch.randn({batch}, 1)\n"
        f"model = overhead.dense_variants({widths!r}, {batch}, False)[{{name!r}}].build()\n"
        "run = overhead.train_step(model, x, y, False)[0] if {kind!r} == 'train' else overhead.eval_forward(model, x, False)\n"
        "run(); run()"
    )
    variants = dense_variants(widths, batch, False)
    tasks = [(name, kind) for name in COUNTED_VARIANTS if name in variants for kind in kinds if kind == "eval" or variants[name].trains]

    def count(task: tuple[str, str]) -> float:
        timer = benchmark.Timer("run()", setup=setup.format(name=task[0], kind=task[1]))
        instructions = timer.collect_callgrind(number=number, collect_baseline=False).counts(denoise=True) / number
        print(f"  {title} {task[0]} {task[1]}: {instructions:.0f} instructions", file=sys.stderr, flush=True)
        return instructions

    with ThreadPoolExecutor(jobs) as pool:  # each count is a valgrind subprocess
        counts = dict(zip(tasks, pool.map(count, tasks)))
    rows = []
    for name in dict.fromkeys(name for name, _ in tasks):
        row = {"variant": name}
        for kind in kinds:
            label = "train step" if kind == "train" else "eval forward"
            mine = counts.get((name, kind))
            row[f"instructions per {label}"] = f"{mine:.4g}" if mine else "-"
            row[f"{kind} ratio"] = f"{mine / counts['plain PyTorch', kind]:.3f}x" if mine else "-"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter timings and no memory peaks, for a smoke run")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--write", action="store_true", help=f"write the tables to {RESULTS}")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help=f"only count instructions of dense training steps and eval forwards under valgrind (needs valgrind; slow), written to {INSTRUCTIONS}",
    )
    parser.add_argument("--device", default="cpu", help="where the models train and infer (default cpu; e.g. cuda)")
    names = [*DENSE_MODELS, "conv", "digits"]
    parser.add_argument("--sections", nargs="+", choices=names, default=names, help="the tables to time (default: all)")
    args = parser.parse_args(argv)
    if args.instructions:
        sections = []
        for name in ("lhcb", "mnist"):
            if name in args.sections:
                title, _, batch = DENSE_MODELS[name]
                number = 1 if args.quick else (20 if name == "lhcb" else 2)
                kinds = ("train", "eval") if name == "lhcb" else ("train",)  # a wide model's eval is its products
                rows = instruction_rows(name, kinds, number)
                sections.append(format_table(rows, f"{title}, batch {batch}"))
                print(sections[-1] + "\n", flush=True)
        if args.write:
            write_results(
                INSTRUCTIONS,
                "Instructions per training step and eval forward (valgrind callgrind)",
                argv,
                sections,
                "Counts are deterministic: other processes' load does not change them. The ratio is to the plain twin's count.",
            )
        return
    rounds, min_time = (2, 0.05) if args.quick else (11, 0.1)
    compile_models = not args.no_compile
    device = torch.device(args.device)
    torch.manual_seed(0)
    sections = []

    def timed(name: str, variants: dict[str, Variant] | None, x: torch.Tensor, y: torch.Tensor, title: str) -> None:
        if name in args.sections and variants is not None:
            rows = time_variants(variants, (x.to(device), y.to(device)), rounds, min_time, memory_peaks=not args.quick)
            sections.append(format_table(rows, title))
            print(sections[-1] + "\n", flush=True)

    for name, (title, widths, batch) in DENSE_MODELS.items():
        x = torch.randn(batch, widths[0])
        y = torch.randint(0, widths[-1], (batch,)) if widths[-1] > 1 else torch.randn(batch, 1)
        timed(name, dense_variants(widths, batch, compile_models), x, y, f"{title}, batch {batch}")
    conv_x, conv_y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    timed("conv", conv_variants(compile_models), conv_x, conv_y, "conv 3-32-32 3x3, 32x32 images, batch 64")
    digits_x, digits_y = torch.rand(128, 1, 8, 8), torch.randint(0, 10, (128,))
    digits_title = "digits convnet 1-32-32-32 3x3 (certify_images.py), 8x8 images, batch 128: training images/s"
    timed("digits", digits_variants(), digits_x, digits_y, digits_title)
    if args.write:
        clock = (
            "Times are CPU time of the calling thread (all work runs there with one torch thread; it excludes "
            "waiting while other processes hold the cores)"
            if device.type == "cpu"
            else f"Times are wall time on {torch.cuda.get_device_name(device)}, synchronised around each timed block"
        )
        write_results(
            RESULTS if device.type == "cpu" else RESULTS.with_name(f"overhead-{device.type}.md"),
            "Overhead against plain PyTorch",
            argv,
            sections,
            f"{clock}, medians over {rounds} interleaved rounds; a ratio is the median over rounds of the per-round "
            "ratio to the plain twin (compiled variants: to the compiled plain twin), with its smallest and largest "
            "round in brackets. Peak memory: resident state plus the peak of live allocations during one eager "
            "training step (CPU: allocation and free events of torch.profiler, at op granularity; CUDA: the allocator's peak).",
        )


def write_results(path: Path, title: str, argv: list[str] | None, sections: list[str], method: str) -> None:
    prefix = "PATH=.venv/bin:$PATH " if path == INSTRUCTIONS else ""
    command = prefix + "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        f"# {title}",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), 2 CPU cores shared with other work; "
        f"torch {torch.__version__}. {method}",
        "",
        "",
    ]
    path.write_text("\n".join(header) + "\n\n".join(sections) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
