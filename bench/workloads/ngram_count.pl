#!/usr/bin/perl
# Count the word trigrams of a source-code corpus in one Perl hash.
#
#     ngram_count.pl [-n N] DIR...
#
# Walks each DIR (File::Find, directories and files in sorted order, so
# every run reads the same bytes in the same order), reads every regular
# file of under 4 MiB that looks like text (C/C++ headers and sources,
# Python, Perl, shell, text), splits it into identifier-like words
# (/[A-Za-z_][A-Za-z0-9_]*/) and counts each run of N consecutive words
# (default 3) in one hash, `$count{"w1 w2 w3"}++`.  Nothing is freed while
# reading: the hash only grows, with a jump each time Perl doubles its
# bucket array.  At the end one pass over the hash (`each`, no list of
# all keys) picks the 20 most frequent n-grams, which it prints with the
# totals.  A real tool pattern: the memory is the number of distinct
# n-grams, which grows with the input, not with any setting.
#
# Round 3's `tool-perl-ngram` traces (bench/traces/NOTES-round3-builds.md) run
# it on /usr/include, /usr/src, /usr/lib/python3.11 and /usr/share/perl of
# the build host; under a limit below the final hash the kernel OOM-kills
# perl mid-read (its comm is `ngram_count.pl`).
use strict;
use warnings;
use File::Find;

my $n = 3;
if (@ARGV >= 2 && $ARGV[0] eq '-n') { shift @ARGV; $n = shift @ARGV; }
die "usage: ngram_count.pl [-n N] DIR...\n" unless @ARGV;

my %count;
my ($files, $bytes, $words) = (0, 0, 0);
my $text = qr/\.(?:h|hh|hpp|hxx|c|cc|cpp|cxx|ipp|inl|tcc|py|pl|pm|pod|sh|txt|rst|md|S|s)$/;

sub one_file {
    my $path = $File::Find::name;
    return unless -f $path && !-l $path && $path =~ $text;
    my $size = -s _;
    return if $size > 4 * 1024 * 1024;
    open(my $fh, '<:raw', $path) or return;
    local $/;
    my $data = <$fh>;
    close $fh;
    $files++;
    $bytes += length $data;
    my @w = $data =~ /([A-Za-z_][A-Za-z0-9_]*)/g;
    $words += @w;
    for my $i (0 .. $#w - $n + 1) {
        $count{join(' ', @w[$i .. $i + $n - 1])}++;
    }
}

for my $dir (@ARGV) {
    find({ wanted => \&one_file, preprocess => sub { sort @_ }, no_chdir => 1 }, $dir);
}
my @top;    # [count, n-gram], at most 20, most frequent first
while (my ($k, $c) = each %count) {
    next if @top == 20 && $c < $top[-1][0];
    @top = (sort { $b->[0] <=> $a->[0] || $a->[1] cmp $b->[1] } @top, [$c, $k])[0 .. (@top < 20 ? @top : 19)];
}
printf "%d files, %d bytes, %d words, %d distinct %d-grams\n",
    $files, $bytes, $words, scalar(keys %count), $n;
printf "%8d  %s\n", @$_ for @top;
