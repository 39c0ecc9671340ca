#!/usr/bin/env python3
"""Regenerate stdlib/prices.json, Chimera's dated price catalog, from the providers' price APIs.

Python 3.11, standard library only. docs/cost.md ("The price catalog") says what the file holds.

    scripts/refresh-prices.py                          # fetch all three clouds, rewrite stdlib/prices.json
    scripts/refresh-prices.py --providers aws,azure    # refresh some providers, keep the others as they are
    scripts/refresh-prices.py --record DIR             # fetch, and save every response under DIR
    scripts/refresh-prices.py --from DIR --out F.json  # replay the responses recorded in DIR; no network

What is priced: exactly the native regions, instance types and disk types the base file already
names (default: stdlib/prices.json; with --from, DIR/base.json when it exists, since a recording
answers the requests of the base it was made with). The stdlib catalog (stdlib/catalog.ncl) is
the authority on what exists, and compiler/tests/prices.rs fails when the price file misses a
region or type the catalog maps. To price a new one, add it to catalog.ncl, then add it to
prices.json with a null price (`"t3.large": null`, or a new region `{"instances": {...},
"disks": {...}}` with nulls) and run this script. GCP instance types also need a `shapes` entry
(family, billed vCPUs, memory); Azure disk types a `disk_tiers` entry (the tier that gives the
per-GiB price).

Sources:
  aws    AWS Price List bulk API, the AmazonEC2 offer file of each region
         (https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/REGION/index.json):
         on-demand terms of Linux, shared tenancy, no pre-installed software, capacitystatus Used;
         EBS storage (productFamily Storage) by volumeApiName, USD per GB-month. An offer file is
         hundreds of MB: products and terms that are not wanted are dropped while parsing, but
         the text is read whole (expect memory of a few times the file's size).
  azure  Azure Retail Prices API (https://prices.azure.com/api/retail/prices), `$filter` on
         serviceName, armRegionName, priceType Consumption and the SKUs; items of type
         Consumption only, skipping Spot, Low Priority and Windows; NextPageLink is followed.
         Managed disks are priced per size tier: the per-GiB-month price is the tier's monthly
         price divided by its size (`disk_tiers` in the base file).
  gcp    Cloud Billing Catalog API, Compute Engine SKUs
         (https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus), API key from the
         environment variable GCP_API_KEY (never recorded). E2 and N2 are billed per vCPU-hour and
         per GiB-hour in each region: a type's price = billed vCPUs x core rate + memory GiB x RAM
         rate, with the `shapes` from the base file (shared-core e2-micro/small/medium bill 0.25,
         0.5 and 1 vCPU). Persistent disks: "Storage PD Capacity" (pd-standard) and "SSD backed
         PD Capacity" (pd-ssd), USD per GiB-month.

Recordings (--record DIR, read back by --from DIR): DIR/index.json maps each request URL
(without the GCP key) to the file holding its response; DIR/base.json is the base the recording
was made with. AWS offer files are recorded trimmed to the products and terms that matched.
scripts/fixtures/prices/ is such a directory, written by hand in the APIs' documented shapes,
and compiler/tests/prices.rs replays it.

Output: the base file with each refreshed provider's prices, `source`, `url`, `retrieved` (the
date, --retrieved or today in UTC) and `note` replaced; sorted keys, two-space indent, written
atomically. Exit status: 0 written; 2 written, but some prices were not found (left null, listed
on stderr; the Rust tests will refuse the file); 1 error, nothing written.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = ROOT / "stdlib" / "prices.json"

AWS_OFFER = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/{region}/index.json"
AWS_INDEX = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/region_index.json"
AZURE_PRICES = "https://prices.azure.com/api/retail/prices"
GCP_SKUS = "https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus"

SOURCES = {
    "aws": (
        "AWS Price List bulk API: AmazonEC2 offer file per region (on-demand, Linux, shared "
        "tenancy, no pre-installed software, capacitystatus Used; EBS storage by volumeApiName)",
        AWS_INDEX,
    ),
    "azure": (
        "Azure Retail Prices API: Virtual Machines (Consumption, Linux, no Spot or Low Priority) "
        "and Storage managed disks",
        AZURE_PRICES,
    ),
    "gcp": (
        "Google Cloud Billing Catalog API: Compute Engine SKUs (E2/N2 on-demand per vCPU-hour "
        "and per GiB-hour; Storage PD Capacity, SSD backed PD Capacity)",
        GCP_SKUS,
    ),
}

NOTES = {
    "aws": "",
    "azure": (
        " Managed disks are billed per size tier, not per GiB: the per-GiB-month price is the "
        "tier's monthly price divided by its size (disk_tiers), so a volume far from that size "
        "is an approximation."
    ),
    "gcp": (
        " A type's price is billed vCPUs x the region's core rate + memory GiB x its RAM rate, "
        "with the shapes below."
    ),
}

# GCP persistent disk type -> the SKU description it is billed under (optionally " in <place>").
GCP_DISKS = {"pd-standard": "Storage PD Capacity", "pd-ssd": "SSD backed PD Capacity"}


class Failure(Exception):
    pass


def warn(msg: str) -> None:
    print(f"refresh-prices: {msg}", file=sys.stderr)


class Http:
    """GETs JSON from the network, or replays a recording; optionally records what it fetched."""

    def __init__(self, replay: Path | None, record: Path | None):
        self.replay = replay
        self.record = record
        self.index: dict[str, str] = {}
        if replay is not None:
            try:
                self.index = json.loads((replay / "index.json").read_text())["responses"]
            except (OSError, ValueError, KeyError) as e:
                raise Failure(f"{replay}/index.json: {e}") from e

    def get(self, url: str, name: str, secret: dict[str, str] | None = None, hook=None, trim=None):
        """The JSON at `url`. `name` names the recorded file; `secret` query parameters are sent
        but never recorded; `hook` is json's object_hook; `trim` shapes what is recorded."""
        if self.replay is not None:
            file = self.index.get(url)
            if file is None:
                raise Failure(f"no recorded response for {url} in {self.replay}/index.json")
            with open(self.replay / file, encoding="utf-8") as f:
                return json.load(f, object_hook=hook)
        full = url
        if secret:
            full += ("&" if "?" in url else "?") + urllib.parse.urlencode(secret)
        req = urllib.request.Request(full, headers={"User-Agent": "chimera-refresh-prices/1"})
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                body = resp.read()
        except OSError as e:  # URLError and HTTPError are OSErrors
            raise Failure(f"GET {url}: {e}") from e
        try:
            doc = json.loads(body, object_hook=hook)
        except ValueError as e:
            raise Failure(f"GET {url}: not JSON: {e}") from e
        del body
        if self.record is not None:
            path = self.record / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, trim(doc) if trim else doc)
            self.index[url] = name
            write_json(self.record / "index.json", {"responses": self.index})
        return doc


def write_json(path: Path, doc) -> None:
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def one_price(found: dict[str, set[float]], what: str, region: str, name: str) -> float | None:
    prices = found.get(name, set())
    if len(prices) > 1:
        raise Failure(f"{what} {region} {name}: several matching prices {sorted(prices)}; tighten the filter")
    return next(iter(prices), None)


# --- AWS ---------------------------------------------------------------------------------------


def aws_region(http: Http, region: str, types: set[str], disks: set[str]):
    wanted: dict[str, tuple[str, str]] = {}  # sku -> ("instances" | "disks", name)

    # Offer files list products before terms, so a term's SKU is known to be wanted or not by
    # the time the term is parsed; whatever is not wanted is dropped as soon as it is read.
    def hook(obj):
        if "sku" in obj and "attributes" in obj:  # a product
            a = obj["attributes"]
            family = obj.get("productFamily")
            in_region = a.get("locationType", "AWS Region") == "AWS Region"
            if (
                family == "Compute Instance"
                and in_region
                and a.get("instanceType") in types
                and a.get("tenancy") == "Shared"
                and a.get("operatingSystem") == "Linux"
                and a.get("preInstalledSw") == "NA"
                and a.get("capacitystatus") == "Used"
                and a.get("licenseModel", "No License required") == "No License required"
                and a.get("operation", "RunInstances") == "RunInstances"
            ):
                wanted[obj["sku"]] = ("instances", a["instanceType"])
                return obj
            if family == "Storage" and in_region and a.get("volumeApiName") in disks:
                wanted[obj["sku"]] = ("disks", a["volumeApiName"])
                return obj
            return None
        if "offerTermCode" in obj and "priceDimensions" in obj:  # a term
            return obj if obj.get("sku") in wanted else None
        return obj

    def trim(doc):
        out = {k: v for k, v in doc.items() if k not in ("products", "terms")}
        out["products"] = {s: p for s, p in doc.get("products", {}).items() if p is not None}
        on_demand = {}
        for sku, terms in doc.get("terms", {}).get("OnDemand", {}).items():
            kept = {c: t for c, t in terms.items() if t is not None}
            if kept:
                on_demand[sku] = kept
        out["terms"] = {"OnDemand": on_demand}
        return out

    url = AWS_OFFER.format(region=region)
    doc = http.get(url, f"aws/{region}.json", hook=hook, trim=trim)
    found: dict[str, dict[str, set[float]]] = {"instances": {}, "disks": {}}
    units = {"instances": "Hrs", "disks": "GB-Mo"}
    for sku, terms in doc.get("terms", {}).get("OnDemand", {}).items():
        if sku not in wanted:
            continue
        section, name = wanted[sku]
        for term in terms.values():
            if term is None:
                continue
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") != units[section] or "USD" not in dim.get("pricePerUnit", {}):
                    continue
                found[section].setdefault(name, set()).add(float(dim["pricePerUnit"]["USD"]))
    instances = {t: one_price(found["instances"], "aws", region, t) for t in types}
    disk_prices = {d: one_price(found["disks"], "aws", region, d) for d in disks}
    return instances, disk_prices


# --- Azure -------------------------------------------------------------------------------------


def azure_items(http: Http, filt: str, name: str) -> list[dict]:
    url = AZURE_PRICES + "?" + urllib.parse.urlencode({"$filter": filt}, quote_via=urllib.parse.quote)
    items, page = [], 1
    while url:
        doc = http.get(url, f"azure/{name}-{page}.json")
        items.extend(doc.get("Items", []))
        url = doc.get("NextPageLink")
        page += 1
    return items


def any_of(field: str, values) -> str:
    return "(" + " or ".join(f"{field} eq '{v}'" for v in sorted(values)) + ")"


def azure_region(http: Http, region: str, types: set[str], disks: set[str], tiers: dict):
    found: dict[str, set[float]] = {}
    if types:
        filt = (
            f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' "
            f"and priceType eq 'Consumption' and {any_of('armSkuName', types)}"
        )
        for it in azure_items(http, filt, f"{region}-vm"):
            sku = it.get("skuName", "") + " " + it.get("meterName", "")
            if (
                it.get("type") != "Consumption"
                or it.get("armRegionName") != region
                or it.get("armSkuName") not in types
                or it.get("currencyCode", "USD") != "USD"
                or it.get("unitOfMeasure") != "1 Hour"
                or "Spot" in sku
                or "Low Priority" in sku
                or "Windows" in it.get("productName", "")
            ):
                continue
            found.setdefault(it["armSkuName"], set()).add(float(it["retailPrice"]))
    instances = {t: one_price(found, "azure", region, t) for t in types}

    disk_prices: dict[str, float | None] = {d: None for d in disks}
    known = {d: tiers[d] for d in disks if d in tiers}
    for d in sorted(set(disks) - set(known)):
        warn(f"azure {region} {d}: no disk_tiers entry in the base file, left unpriced")
    if known:
        skus = {f"{t['tier']} LRS" for t in known.values()}
        filt = (
            f"serviceName eq 'Storage' and armRegionName eq '{region}' "
            f"and priceType eq 'Consumption' and {any_of('skuName', skus)}"
        )
        monthly: dict[str, set[float]] = {}
        for it in azure_items(http, filt, f"{region}-disks"):
            meter = it.get("meterName", "")
            if (
                it.get("type") != "Consumption"
                or it.get("armRegionName") != region
                or it.get("currencyCode", "USD") != "USD"
                or it.get("unitOfMeasure") not in ("1/Month", "1 Month")
                or not re.fullmatch(r"\S+ LRS Disks?|\S+ Disks?", meter)
            ):
                continue
            for d, t in known.items():
                if it.get("productName") == t["product"] and it.get("skuName") == f"{t['tier']} LRS":
                    monthly.setdefault(d, set()).add(float(it["retailPrice"]))
        for d, t in known.items():
            m = one_price(monthly, "azure", region, d)
            disk_prices[d] = None if m is None else m / t["gib"]
    return instances, disk_prices


# --- GCP ---------------------------------------------------------------------------------------


def gcp_skus(http: Http, replay: bool) -> list[dict]:
    key = os.environ.get("GCP_API_KEY")
    if not replay and not key:
        raise Failure("GCP needs an API key in the environment variable GCP_API_KEY")
    skus, token, page = [], None, 1
    while True:
        query = {"currencyCode": "USD", "pageSize": "5000"}
        if token:
            query["pageToken"] = token
        url = GCP_SKUS + "?" + urllib.parse.urlencode(query)
        doc = http.get(url, f"gcp/skus-{page}.json", secret={"key": key} if key else None)
        skus.extend(doc.get("skus", []))
        token = doc.get("nextPageToken")
        if not token:
            return skus
        page += 1


def sku_price(sku: dict) -> float | None:
    for info in sku.get("pricingInfo", [])[:1]:
        for rate in info.get("pricingExpression", {}).get("tieredRates", []):
            unit = rate.get("unitPrice", {})
            if unit.get("currencyCode", "USD") != "USD":
                continue
            price = int(unit.get("units") or 0) + int(unit.get("nanos") or 0) / 1e9
            if price > 0:
                return price
    return None


def gcp_region(skus: list[dict], region: str, types: set[str], disks: set[str], shapes: dict):
    def matching(prefix: str, exact: bool, unit: str) -> dict[str, set[float]]:
        out: dict[str, set[float]] = {}
        for s in skus:
            desc = s.get("description", "")
            ok = desc == prefix or desc.startswith(prefix + " in ") if exact else desc.startswith(prefix)
            cat = s.get("category", {})
            expr = (s.get("pricingInfo") or [{}])[0].get("pricingExpression", {})
            if (
                ok
                and cat.get("usageType") == "OnDemand"
                and region in s.get("serviceRegions", [])
                and expr.get("usageUnit") == unit
                and (p := sku_price(s)) is not None
            ):
                out.setdefault(prefix, set()).add(p)
        return out

    rates: dict[tuple[str, str], float | None] = {}
    for family in sorted({shapes[t]["family"] for t in types if t in shapes}):
        for part, unit in (("Core", "h"), ("Ram", "GiBy.h")):
            prefix = f"{family} Instance {part} running in"
            rates[family, part] = one_price(matching(prefix, False, unit), "gcp", region, prefix)
    instances: dict[str, float | None] = {}
    for t in types:
        shape = shapes.get(t)
        if shape is None:
            warn(f"gcp {t}: no shapes entry in the base file, left unpriced")
            instances[t] = None
            continue
        core, ram = rates.get((shape["family"], "Core")), rates.get((shape["family"], "Ram"))
        instances[t] = (
            None if core is None or ram is None
            else round(shape["vcpu"] * core + shape["memory_gib"] * ram, 9)
        )
    disk_prices: dict[str, float | None] = {}
    for d in disks:
        desc = GCP_DISKS.get(d)
        if desc is None:
            warn(f"gcp {d}: the script does not know which SKU bills this disk type")
            disk_prices[d] = None
            continue
        disk_prices[d] = one_price(matching(desc, True, "GiBy.mo"), "gcp", region, desc)
    return instances, disk_prices


# --- main --------------------------------------------------------------------------------------


def names(regions: dict, section: str) -> set[str]:
    return {n for r in regions.values() for n in r.get(section, {})}


def refresh(args) -> int:
    replay = Path(args.replay) if args.replay else None
    base_path = Path(args.base) if args.base else None
    if base_path is None:
        base_path = replay / "base.json" if replay and (replay / "base.json").exists() else DEFAULT_BASE
    try:
        base = json.loads(base_path.read_text())
        providers = base["providers"]
    except (OSError, ValueError, KeyError) as e:
        raise Failure(f"base file {base_path}: {e}") from e
    chosen = [p.strip() for p in args.providers.split(",") if p.strip()]
    for p in chosen:
        if p not in SOURCES:
            raise Failure(f"unknown provider {p!r}; expected aws, azure or gcp")
    record = Path(args.record) if args.record else None
    if record:
        record.mkdir(parents=True, exist_ok=True)
        write_json(record / "base.json", base)
    http = Http(replay, record)
    day = args.retrieved or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise Failure(f"--retrieved {day!r} is not YYYY-MM-DD")

    out = copy.deepcopy(base)
    missing = []
    for p in chosen:
        if p not in providers:
            warn(f"{p}: not in the base file, skipped")
            continue
        regions = providers[p]["regions"]
        types, disks = names(regions, "instances"), names(regions, "disks")
        skus = gcp_skus(http, replay is not None) if p == "gcp" else None
        priced = {}
        for region in sorted(regions):
            if p == "aws":
                inst, dsk = aws_region(http, region, types, disks)
            elif p == "azure":
                inst, dsk = azure_region(http, region, types, disks, providers[p].get("disk_tiers", {}))
            else:
                inst, dsk = gcp_region(skus, region, types, disks, providers[p].get("shapes", {}))
            priced[region] = {"instances": inst, "disks": dsk}
            missing += [f"{p} {region} {n}" for n, v in {**inst, **dsk}.items() if v is None]
        how = f"replayed from the responses recorded in {args.replay}" if replay else "fetched"
        source, url = SOURCES[p]
        out["providers"][p].update(
            source=source,
            url=url,
            retrieved=day,
            note=f"Prices {how} by scripts/refresh-prices.py on {day}.{NOTES[p]}",
            regions=priced,
        )
    write_json(Path(args.out), out)
    for m in missing:
        warn(f"no price found for {m}; left null")
    return 2 if missing else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_BASE), help="file to write (default: stdlib/prices.json)")
    ap.add_argument("--base", help="price file naming the regions and types to price (default: see above)")
    ap.add_argument("--from", dest="replay", metavar="DIR", help="replay the responses recorded in DIR")
    ap.add_argument("--record", metavar="DIR", help="save every response (and the base) under DIR")
    ap.add_argument("--providers", default="aws,azure,gcp", help="comma-separated (default: all three)")
    ap.add_argument("--retrieved", metavar="YYYY-MM-DD", help="the date to record (default: today, UTC)")
    args = ap.parse_args()
    if args.replay and args.record:
        ap.error("--from and --record exclude each other")
    try:
        return refresh(args)
    except Failure as e:
        warn(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
