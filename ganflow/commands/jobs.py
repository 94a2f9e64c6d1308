"""`ganflow jobs list|status|logs|stop`: ganflow jobs on a Ray cluster, through the Jobs API."""

from __future__ import annotations

import json
import sys

from ganflow.commands.common import EXIT_FAILURE, die
from ganflow.ray import jobs


def main(args) -> int:
    try:
        if args.jobs_command == "list":
            rows = jobs.list_jobs(args.address)
            if args.json:
                for row in rows:
                    print(json.dumps(row))
                return 0
            table = [("ID", "STATUS", "KIND", "NAME", "STARTED")] + [
                (r["id"], r["status"], r["kind"] or "-", r["name"] or "-", r["started"]) for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            for row in table:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        elif args.jobs_command == "status":
            info = jobs.status(args.id, args.address)
            print(json.dumps(info) if args.json else f"{info['id']}  {info['status']}  {info['message']}".rstrip())
        elif args.jobs_command == "logs":
            if args.follow:
                for chunk in jobs.follow(args.id, args.address):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                sys.stdout.write(jobs.logs(args.id, args.address))
        elif args.jobs_command == "stop":
            state = jobs.stop(args.id, args.address)
            print(f"{args.id}  {state}")
            return 0 if state in jobs.TERMINAL else EXIT_FAILURE
    except jobs.JobsError as err:
        return die(str(err))
    return 0
