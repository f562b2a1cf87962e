# shellcheck shell=bash
# Helpers for tests that run the appliance (sourced).

# wait_for_control QOSCTL SOCKET LOG TRIES: waits (TRIES × 100 ms at most) until the control socket
# answers, which it does once the data plane runs; otherwise prints LOG and fails the test.
wait_for_control() {
  local qosctl=$1 sock=$2 log=$3 tries=$4
  for _ in $(seq "$tries"); do "$qosctl" --socket "$sock" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$qosctl" --socket "$sock" status >/dev/null || { cat "$log"; echo "FAIL: qosvisor did not start"; exit 1; }
}
