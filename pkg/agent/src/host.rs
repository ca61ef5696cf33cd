//! What the node reports about its host: capacity (CPU, memory, ephemeral storage, pids),
//! kernel/OS facts for nodeInfo, and the pressure conditions.
