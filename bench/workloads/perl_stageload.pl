#!/usr/bin/perl
# Perl catalogue service that loads its tables in stages and serves between them.
#
# usage: perl perl_stageload.pl STAGES STAGE_SECONDS LOAD_SECONDS BASE_RECORDS GROWTH
#   e.g. perl bench/workloads/perl_stageload.pl 8 8 3 60000 1.25
#
# Paced on the monotonic clock (Time::HiRes) in 0.1 s ticks.  Every
# STAGE_SECONDS a new stage starts: a table of BASE_RECORDS x GROWTH^k
# records (k = 0, 1, ...: each catalogue shard larger than the last) is
# loaded over LOAD_SECONDS, evenly per tick; each record is a hash (id, a
# 40-character name, a price, an array of 5 tag strings: ~600 bytes of
# Perl data) kept in that stage's hash, and every stage's table is kept.
# For the rest of the stage the service only answers lookups (random reads
# of loaded records, srand(41): the same ones every run), so memory is
# flat.  The curve: a staircase of steep climbs (one per stage, each taller
# than the last) and flat treads.  Perl keeps what it allocates.  Nothing
# is written to disk.
use strict;
use warnings;
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

my ($stages, $stage_s, $load_s, $base, $growth) = @ARGV;
die "usage: $0 STAGES STAGE_SECONDS LOAD_SECONDS BASE_RECORDS GROWTH\n" unless defined $growth;
$| = 1;
srand(41);
my @tables;
my @words = map { sprintf "tag%04d", $_ } 0 .. 2999;
my $t0 = clock_gettime(CLOCK_MONOTONIC);
my ($tick, $hits) = (0, 0);
my $ticks_per_stage = int($stage_s * 10 + 0.5);
my $load_ticks = int($load_s * 10 + 0.5);
while (1) {
    my $due = $t0 + $tick * 0.1;
    my $now = clock_gettime(CLOCK_MONOTONIC);
    Time::HiRes::sleep($due - $now) if $due > $now;
    my $stage = int($tick / $ticks_per_stage);
    last if $stage >= $stages;
    my $in = $tick % $ticks_per_stage;
    my $want = int($base * $growth ** $stage);
    if ($in < $load_ticks) {
        my $tab = ($tables[$stage] //= {});
        my $upto = int($want * ($in + 1) / $load_ticks);
        for my $i (scalar(keys %$tab) .. $upto - 1) {
            my $id = sprintf "s%02d-%08d", $stage, $i;
            $tab->{$id} = {
                id    => $id,
                name  => sprintf("%-40s", "item $i of shard $stage " . ($i * 7919 % 100003)),
                price => ($i * 31 % 100000) / 100,
                tags  => [ map { $words[($i * 13 + $_ * 577) % 3000] } 0 .. 4 ],
            };
        }
        printf "t=%.1f stage=%d loaded=%d\n", $tick / 10, $stage, $upto if $in == $load_ticks - 1;
    } else {
        for (1 .. 2000) {
            my $s = int(rand(scalar @tables));
            my $id = sprintf "s%02d-%08d", $s, int(rand(int($base * $growth ** $s)));
            $hits++ if exists $tables[$s]{$id};
        }
    }
    $tick++;
}
print "done stages=$stages hits=$hits\n";
