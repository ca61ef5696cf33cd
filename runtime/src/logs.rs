//! The CRI container log format (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`): parsing and
//! the reads `kubectl logs` asks for (follow, tail, since, timestamps, limitBytes).
