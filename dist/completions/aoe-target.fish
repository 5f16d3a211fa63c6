complete -c aoe-target -s b -l buffer-count -d 'Buffer count advertised to initiators: how many requests each may keep outstanding (1 to 65535)' -r
complete -c aoe-target -s o -l offset -d 'Sectors of 512 bytes at the start of FILE that are not exported: sector 0 of the disk is sector SECTORS of FILE' -r
complete -c aoe-target -s l -l length -d 'Sectors of 512 bytes exported from the offset on [default: the rest of FILE]' -r
complete -c aoe-target -s m -l mask -d 'Answer only these initiators (the initial MAC mask list), comma-separated; each as 00:11:22:aa:bb:cc, 00-11-22-aa-bb-cc or 001122aabbcc, any case. Initiators may edit the list later (AoE command 2) [default: answer every initiator]' -r
complete -c aoe-target -s c -l config -d 'Serve the exports listed in the TOML file FILE instead of SHELF SLOT NETIF FILE (see "Configuration file" below)' -r -F
complete -c aoe-target -l busy-poll -d 'Microseconds each interface keeps polling for frames after the last ones came before it sleeps: answers a queue-depth-1 initiator without a wake-up per request, at the cost of a busy CPU while requests keep coming; 0 sleeps at once. Overrides the configuration file\'s busy_poll_us [default: 50]' -r
complete -c aoe-target -l io-threads -d 'Threads per interface that do the disk\'s reads, writes and flushes, so that requests are not held up behind one the disk is busy with; 0 does them in the thread that receives, fastest for files the page cache holds. Overrides the configuration file\'s io_threads [default: 16 for a block device, an NBD export or with -d, else 0]' -r
complete -c aoe-target -l metrics -d 'Serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9172. Overrides the configuration file\'s metrics [default: none]' -r
complete -c aoe-target -l control -d 'The control socket `aoe-target ctl` talks to. Overrides the configuration file\'s control [default: with --config, /run/aoe-target/NAME.sock, NAME the configuration file\'s name without .toml; else none]' -r -F
complete -c aoe-target -s d -l direct -d 'Open FILE with O_DIRECT, bypassing the page cache'
complete -c aoe-target -s s -l sync -d 'Open FILE with O_SYNC: a write is on stable storage before it is answered'
complete -c aoe-target -s r -l read-only -d 'Export read-only: FILE is opened read-only and writes are refused (ATA ERR, ABRT)'
complete -c aoe-target -l no-rx-ring -d 'Receive frames with recvmmsg rather than through a ring shared with the kernel (PACKET_RX_RING), which takes frames that keep coming without a system call. Overrides the configuration file\'s rx_ring'
complete -c aoe-target -l check -d 'Check the settings (files, offsets, lengths, interfaces; an NBD server is connected to and its size shown) and exit without serving'
complete -c aoe-target -s v -l verbose -d 'Log more: -v debug, -vv trace (RUST_LOG overrides)'
complete -c aoe-target -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe-target -s V -l version -d 'Print version'
