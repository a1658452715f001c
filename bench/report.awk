# bench/report.awk: turns the lines `./run bench` collected into the comparison table.
#
# Input: one line per measurement, each `side=<stella|stella_ed25519|grpc> <key=value ...>` where
# the rest is what stella-bench / grpc-bench print (`case=... qps=...`, `ceiling ...`). Every
# figure in the table is the median over the rounds; ratios are taken between the medians.
#
#   awk -f bench/report.awk results.txt

function median(list,    n, parts, i, j, tmp) {
  n = split(list, parts, " ")
  if (n == 0) {
    return ""
  }
  for (i = 2; i <= n; i++) {  # insertion sort: at most a handful of rounds
    tmp = parts[i] + 0
    for (j = i - 1; j >= 1 && parts[j] + 0 > tmp; j--) {
      parts[j + 1] = parts[j]
    }
    parts[j + 1] = tmp
  }
  if (n % 2 == 1) {
    return parts[(n + 1) / 2] + 0
  }
  return (parts[n / 2] + parts[n / 2 + 1]) / 2
}

function get(side, name, key) {
  return median(values[side SUBSEP name SUBSEP key])
}

function ratio(a, b) {
  if (a == "" || b == "" || b + 0 == 0) {
    return "-"
  }
  return sprintf("%.2f", a / b)
}

function show(x, format) {
  return x == "" ? "-" : sprintf(format, x)
}

function verdict(ok) {
  return ok ? "met" : "NOT met"
}

{
  side = ""
  name = ""
  for (i = 1; i <= NF; i++) {
    if ($i ~ /^side=/) {
      side = substr($i, 6)
    } else if ($i ~ /^case=/) {
      name = substr($i, 6)
    } else if ($i == "ceiling") {
      name = "ceiling"
    }
  }
  if (side == "" || name == "") {
    next
  }
  if (!((side, name) in seen)) {
    seen[side, name] = 1
    if (side == "stella" && name != "ceiling" && name !~ /^idle_/) {
      order[++cases] = name
    }
  }
  for (i = 1; i <= NF; i++) {
    if (split($i, kv, "=") == 2 && kv[2] != "na" && kv[1] != "side" && kv[1] != "case") {
      values[side, name, kv[1]] = values[side, name, kv[1]] " " kv[2]
    }
  }
  rounds[side, name]++
}

END {
  printf "%-15s %10s %10s %6s | %7s %7s %6s | %8s %8s %6s | %7s %7s\n", "case", "stella/s",
         "gRPC/s", "ratio", "p99 S", "p99 G", "ratio", "gw us", "gRPC us", "ratio", "svc us",
         "cli us"
  printf "%-15s %10s %10s %6s | %7s %7s %6s | %8s %8s %6s | %7s %7s\n", "", "(median)",
         "(median)", "S/G", "(us)", "(us)", "S/G", "per call", "srv/call", "gw/srv", "S", "S"
  for (c = 1; c <= cases; c++) {
    name = order[c]
    sq = get("stella", name, "qps"); gq = get("grpc", name, "qps")
    sp = get("stella", name, "p99_us"); gp = get("grpc", name, "p99_us")
    sg = get("stella", name, "cpu_us_per_call_gateway"); gs = get("grpc", name, "cpu_us_per_call_service")
    printf "%-15s %10s %10s %6s | %7s %7s %6s | %8s %8s %6s | %7s %7s\n", name, show(sq, "%.0f"),
           show(gq, "%.0f"), ratio(sq, gq), show(sp, "%.0f"), show(gp, "%.0f"), ratio(sp, gp),
           show(sg, "%.2f"), show(gs, "%.2f"), ratio(sg, gs),
           show(get("stella", name, "cpu_us_per_call_service"), "%.2f"),
           show(get("stella", name, "cpu_us_per_call_client"), "%.2f")
  }
  printf "(rounds: stella %d, gRPC %d; S = stella routed through the gateway, G = gRPC direct)\n",
         rounds["stella", order[1]], rounds["grpc", order[1]]

  printf "\nceilings (BoringSSL, one core, same run):\n"
  hs = get("stella", "ceiling", "handshakes_per_core_p256")
  hs_ed = get("stella", "ceiling", "handshakes_per_core_ed25519")
  two_pass = get("stella", "ceiling", "two_pass_cpu_s_per_gb")
  printf "  P-256 handshake ceiling %s/s, Ed25519 %s/s; AES-128-GCM %s GB/s (two passes: %s s/GB)\n",
         show(hs, "%.0f"), show(hs_ed, "%.0f"),
         show(get("stella", "ceiling", "aes128gcm_gb_per_s"), "%.2f"), show(two_pass, "%.3f")

  printf "\ntargets:\n"
  sq = get("stella", "unary_64B_c64", "qps"); gq = get("grpc", "unary_64B_c64", "qps")
  if (sq != "" && gq != "") {
    printf "  unary 64 B x64 QPS: stella/gRPC %.2f (target >= 1.50): %s\n", sq / gq,
           verdict(sq / gq >= 1.5)
    sp = get("stella", "unary_64B_c64", "p99_us"); gp = get("grpc", "unary_64B_c64", "p99_us")
    printf "  unary 64 B x64 p99: stella %.0f us, gRPC %.0f us (target <= gRPC): %s\n", sp, gp,
           verdict(sp <= gp)
    sg = get("stella", "unary_64B_c64", "cpu_us_per_call_gateway")
    gs = get("grpc", "unary_64B_c64", "cpu_us_per_call_service")
    if (gs > 0) {
      printf "  gateway CPU per call / gRPC server CPU per call: %.2f (target <= 0.33): %s\n",
             sg / gs, verdict(sg / gs <= 1 / 3)
    }
  }
  rate = get("stella", "connect", "connects_per_server_cpu_s")
  if (rate != "" && hs != "") {
    printf "  new mTLS connections (P-256): %.0f per gateway CPU second = %.0f%% of the ceiling " \
           "(target >= 80%%): %s; gRPC: %s per server CPU second, %s/s wall vs stella %s/s\n",
           rate, 100 * rate / hs, verdict(rate >= 0.8 * hs),
           show(get("grpc", "connect", "connects_per_server_cpu_s"), "%.0f"),
           show(get("grpc", "connect", "qps"), "%.0f"), show(get("stella", "connect", "qps"), "%.0f")
  }
  rate_ed = get("stella_ed25519", "connect", "connects_per_server_cpu_s")
  if (rate_ed != "" && hs_ed != "") {
    printf "  new mTLS connections (Ed25519): %.0f per gateway CPU second = %.0f%% of its ceiling; " \
           "%s/s wall\n", rate_ed, 100 * rate_ed / hs_ed,
           show(get("stella_ed25519", "connect", "qps"), "%.0f")
  }
  gb = get("stella", "body_1MiB_c4", "cpu_s_per_gb_gateway")
  if (gb != "" && two_pass != "") {
    printf "  1 MiB bodies: gateway %.3f CPU s/GB = %.2fx two AES-GCM passes (target <= 1.50): %s\n",
           gb, gb / two_pass, verdict(gb / two_pass <= 1.5)
  }
  kib = get("stella", "idle_5000", "gateway_kib_per_connection")
  if (kib != "") {
    printf "  idle service connections: %.1f KiB of gateway RSS each over %s connections " \
           "(target <= 24): %s\n", kib, show(get("stella", "idle_5000", "connections"), "%d"),
           verdict(kib <= 24)
  }
}
