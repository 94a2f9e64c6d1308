"""`ganflow serve RUN`: a run's generator over HTTP with Ray Serve (ganflow/ray/serve.py), until
interrupted (Ctrl-C, SIGTERM). The generator is loaded here first: a bad location is one line
before Ray starts."""

from __future__ import annotations

import sys
import time

from ganflow.commands.common import RUN_ERRORS, die, load_generator, resolve_location


def _autoscale(text):
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--autoscale: MIN,MAX replicas, got {text!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"--autoscale: 1 <= MIN <= MAX, got {text!r}")
    return low, high


def main(args, stop=None) -> int:
    try:
        autoscale = _autoscale(args.autoscale) if args.autoscale else None
        if args.replicas < 1 or args.max_batch < 1 or not 0 < args.port < 65536:
            raise ValueError("--replicas and --max-batch must be >= 1, --port in 1..65535")
        if args.reload_every is not None and not args.reload_every > 0:
            raise ValueError(f"--reload-every: seconds > 0, got {args.reload_every}")
        location = resolve_location(args.run)  # a wandb: name, once: every replica loads the same checkpoint
        load_generator(location)  # a bad location or checkpoint: here, in one line
    except ValueError as err:
        return die(str(err))
    except RUN_ERRORS as err:
        return die(str(err))
    try:
        from ray import serve
    except ImportError:
        return die("serve needs Ray Serve: pip install 'ganflow[serve]' (ray[serve])")

    from ganflow.ray.cluster import RayAddressError, ray_session
    from ganflow.ray.serve import deployment

    app = deployment(location, replicas=args.replicas, autoscale=autoscale, gpus=args.gpus_per_replica,
                     cpus=args.cpus_per_replica, max_batch=args.max_batch, reload_s=args.reload_every)
    try:
        with ray_session(args.address, "serve", stop):
            try:  # a stop (Ctrl-C, SIGTERM) from here on, even while Serve still starts, shuts it down cleanly
                serve.start(http_options={"host": args.host, "port": args.port})
                serve.run(app, name="ganflow", route_prefix="/")
                url = f"http://{args.host}:{args.port}"
                print(f"[ganflow] serving {args.run} at {url}/sample?n=16&seed=0 (and {url}/health); Ctrl-C stops",
                      file=sys.stderr, flush=True)
                print(url, flush=True)
                if stop is not None:
                    stop.install()  # again: Serve's start-up may have set its own
                while True:  # a sleeping main thread takes the signal (a blocked wait may not)
                    time.sleep(1)
            except (KeyboardInterrupt, SystemExit):
                print("[ganflow] serve: stopping", file=sys.stderr, flush=True)
            finally:
                serve.shutdown()
    except RayAddressError as err:
        return die(str(err))
    except KeyboardInterrupt:  # stopped while Serve was still starting
        return die("interrupted", 130)
    return 0
