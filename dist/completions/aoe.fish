# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_aoe_global_optspecs
    string join \n i/iface= timeout= dead-timeout= v/verbose h/help V/version
end

function __fish_aoe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_aoe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_aoe_using_subcommand
    set -l cmd (__fish_aoe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c aoe -n "__fish_aoe_needs_command" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_needs_command" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_needs_command" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_needs_command" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_needs_command" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "discover" -d 'Find AoE disks and show what they say about themselves'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "identify" -d 'Show a disk\'s IDENTIFY DEVICE data'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "config" -d 'Read, set or test a disk\'s config string'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "mask" -d 'List or edit a disk\'s MAC mask list (which initiators it answers)'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "reserve" -d 'List, set or release a disk\'s reservation (which initiators may use it)'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "read" -d 'Copy bytes of a disk to a file or stdout'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "write" -d 'Copy a file or stdin to a disk'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "bench" -d 'Measure sequential throughput and random-read IOPS'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "demo" -d 'Run a target and an initiator in two private network namespaces (needs root)'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "nbd" -d 'Serve a disk to NBD clients (qemu, nbdcopy, nbdfuse, nbd-client)'
complete -c aoe -n "__fish_aoe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aoe -n "__fish_aoe_using_subcommand discover" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand discover" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand discover" -l json -d 'Print a JSON array instead of a table (sizes in bytes and sectors, MACs as strings)'
complete -c aoe -n "__fish_aoe_using_subcommand discover" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand discover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand discover" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand identify" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand identify" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand identify" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand identify" -l json -d 'Print the fields as a JSON object'
complete -c aoe -n "__fish_aoe_using_subcommand identify" -l raw -d 'Print the 512 bytes of IDENTIFY data as hex (256 little-endian words)'
complete -c aoe -n "__fish_aoe_using_subcommand identify" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand identify" -s h -l help -d 'Print help'
complete -c aoe -n "__fish_aoe_using_subcommand identify" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand config" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand config" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand config" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand config" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand config" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand mask" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand mask" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand mask" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand mask" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand mask" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand mask" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand reserve" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand read" -l offset -d 'First byte of the disk to read (K, M, G, T suffixes: powers of 1024)' -r
complete -c aoe -n "__fish_aoe_using_subcommand read" -l length -d 'Bytes to read [default: up to the end of the disk]' -r
complete -c aoe -n "__fish_aoe_using_subcommand read" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand read" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand read" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand read" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand read" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand read" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand write" -l offset -d 'First byte of the disk to write (K, M, G, T suffixes: powers of 1024)' -r
complete -c aoe -n "__fish_aoe_using_subcommand write" -l length -d 'Bytes to write [default: all of FILE]; FILE must hold at least that many' -r
complete -c aoe -n "__fish_aoe_using_subcommand write" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand write" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand write" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand write" -l verify -d 'Read every chunk back after writing it and compare; exit 1 at the first difference'
complete -c aoe -n "__fish_aoe_using_subcommand write" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand write" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand write" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand bench" -l size -d 'Bytes of the sequential tests, from the start of the disk (K, M, G, T suffixes) [default: 256M, or the disk\'s size if smaller]' -r
complete -c aoe -n "__fish_aoe_using_subcommand bench" -l seconds -d 'How long each random-read test runs (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand bench" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand bench" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand bench" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand bench" -l write -d 'Also measure sequential writes: overwrites the first --size bytes of the disk'
complete -c aoe -n "__fish_aoe_using_subcommand bench" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand bench" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand demo" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand demo" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand demo" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand demo" -l bench -d 'Also benchmark the in-memory disk (aoe bench --write) before cleaning up'
complete -c aoe -n "__fish_aoe_using_subcommand demo" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand demo" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l unix -d 'Listen on this Unix socket (created; removed on exit)' -r -F
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l tcp -d 'Listen on this TCP address and port [default: 127.0.0.1:10809, loopback only: NBD has no authentication]' -r
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l name -d 'The export\'s name [default: the disk\'s name, e.g. e1.0]' -r
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -s i -l iface -d 'Network interface to use, e.g. eth1; repeat for several (multipath) [default: every interface that is up, Ethernet and not loopback]' -r
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l timeout -d 'How long to wait for targets to answer a discovery query: seconds (0.5, 2s) or milliseconds (500ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l dead-timeout -d 'Silence after which a target that stopped answering is given up (seconds or ms)' -r
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -l read-only -d 'Refuse writes (EPERM) and tell clients the export is read-only'
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -s v -l verbose -d 'Log more on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)'
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aoe -n "__fish_aoe_using_subcommand nbd" -s V -l version -d 'Print version'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "discover" -d 'Find AoE disks and show what they say about themselves'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "identify" -d 'Show a disk\'s IDENTIFY DEVICE data'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "config" -d 'Read, set or test a disk\'s config string'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "mask" -d 'List or edit a disk\'s MAC mask list (which initiators it answers)'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "reserve" -d 'List, set or release a disk\'s reservation (which initiators may use it)'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "read" -d 'Copy bytes of a disk to a file or stdout'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "write" -d 'Copy a file or stdin to a disk'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "bench" -d 'Measure sequential throughput and random-read IOPS'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "demo" -d 'Run a target and an initiator in two private network namespaces (needs root)'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "nbd" -d 'Serve a disk to NBD clients (qemu, nbdcopy, nbdfuse, nbd-client)'
complete -c aoe -n "__fish_aoe_using_subcommand help; and not __fish_seen_subcommand_from discover identify config mask reserve read write bench demo nbd help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
