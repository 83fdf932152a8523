set terminal pngcairo size 900,480 font 'DejaVu Sans,10'
set output 'policy.png'
set multiplot layout 1,2 title 'Policy service (wrk, Dovecot-shaped bodies)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set grid ytics
set key top left
set ylabel 'requests/s'
set yrange [0:*]
plot 'policy.dat' using 2:xtic(1) title 'req/s' lc rgb '#3b73b9'
set ylabel 'latency (ms)'
set logscale y
set yrange [0.05:*]
plot 'policy.dat' using 3:xtic(1) title 'p50' lc rgb '#6aa84f', \
     '' using 4 title 'p90' lc rgb '#f1c232', \
     '' using 5 title 'p99' lc rgb '#cc0000'
unset multiplot
