#!/usr/bin/perl
# Perl in-memory session store whose TTL sweep falls behind rising logins.
#
# usage: perl perl_sessions.pl SECONDS START_RATE RATE_STEP TTL SWEEP_CAP
#   e.g. perl bench/workloads/perl_sessions.pl 75 3000 120 10 8000
#
# Paced on the monotonic clock (Time::HiRes) in 0.1 s ticks, the store
# "receives" logins: START_RATE new sessions a second at first, RATE_STEP
# more every second (traffic climbing).  Each session is a hash (user, ip,
# token, created/seen times, a small array of 5-20 event strings: ~1.5 KiB
# of Perl data) in a hash keyed by a hex session id; every tick 0.2 % of the
# live sessions (random) are touched and get one more event.  Once a second
# a sweep deletes sessions older than TTL seconds, oldest first, but at
# most SWEEP_CAP of them (a sweep budget, as a real store caps its pause).
# While logins stay under the cap the store holds ~rate x TTL sessions;
# once the rate passes the cap the backlog of expired sessions grows
# without bound: a climb that bends upward.  Perl keeps freed memory in
# its process (malloc), so drops are small.  Nothing is written to disk.
use strict;
use warnings;
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

my ($seconds, $rate0, $step, $ttl, $cap) = @ARGV;
die "usage: $0 SECONDS START_RATE RATE_STEP TTL SWEEP_CAP\n" unless defined $cap;
$| = 1;
srand(19);
my %store;
my @order;       # session ids in creation order (the sweep's queue)
my $head = 0;    # first not-yet-swept index in @order
my $t0 = clock_gettime(CLOCK_MONOTONIC);
my ($tick, $made, $owed, $next_sweep) = (0, 0, 0, 1);
while (1) {
    my $due = $t0 + $tick * 0.1;
    my $now = clock_gettime(CLOCK_MONOTONIC);
    Time::HiRes::sleep($due - $now) if $due > $now;
    my $t = $due - $t0;
    last if $t >= $seconds;
    $owed += ($rate0 + $step * $t) * 0.1;
    while ($owed >= 1) {
        my $id = sprintf "%016x%08x", $made, int(rand(0xffffffff));
        my @ev = map { sprintf "ev:%d:%s:%d", $_, ("login", "view", "cart", "api")[int rand 4], int rand 1e6 } 1 .. 5 + int rand 16;
        $store{$id} = { user => "user" . int(rand(5e6)), ip => join(".", map { int rand 256 } 1 .. 4),
                        token => join("", map { sprintf "%02x", rand 256 } 1 .. 24),
                        created => $t, seen => $t, events => \@ev };
        push @order, $id;
        $made++;
        $owed -= 1;
    }
    my $live = $#order - $head + 1;
    for (1 .. int($live * 0.002)) {
        my $s = $store{ $order[$head + int rand $live] } or next;
        $s->{seen} = $t;
        push @{ $s->{events} }, "ev:touch:" . int($t * 10);
    }
    if ($t >= $next_sweep) {
        my $n = 0;
        while ($head <= $#order && $n < $cap) {
            my $s = $store{ $order[$head] };
            last if $s && $s->{created} > $t - $ttl;
            delete $store{ $order[$head] };
            $head++;
            $n++;
        }
        if ($head > 200000) { splice(@order, 0, $head); $head = 0; }
        printf "[perl_sessions.pl] %6.1fs rate %d/s swept %d live %d\n", $t, $rate0 + $step * $t, $n, scalar(keys %store)
            if int($t) % 5 == 0;
        $next_sweep += 1;
    }
    $tick++;
}
printf "[perl_sessions.pl] done: %d sessions made, %d live\n", $made, scalar(keys %store);
