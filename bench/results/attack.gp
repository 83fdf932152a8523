set terminal pngcairo size 1000,480 font 'DejaVu Sans,10'
set output 'attack.png'
set multiplot layout 1,2 title 'Simulated attacks on Dovecot (same run, same machine)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set yrange [0:*]
set key top right font ',9'
set ylabel 'password checks the attacker (phone) got'
plot 'attack-checks.dat' using 2:xtic(1) title 'none' lc rgb '#cc0000', \
     'attack-checks.dat' using 3 title 'dovecot-penalty' lc rgb '#e69138', \
     'attack-checks.dat' using 4 title 'authbrake' lc rgb '#3b73b9', \
     'attack-checks.dat' using 5 title 'authbrake-no-penalty' lc rgb '#6aa84f'
set key top left
set ylabel 'legitimate logins refused or delayed > 1 s'
plot 'attack-legit.dat' using 2:xtic(1) title 'none' lc rgb '#cc0000', \
     'attack-legit.dat' using 3 title 'dovecot-penalty' lc rgb '#e69138', \
     'attack-legit.dat' using 4 title 'authbrake' lc rgb '#3b73b9', \
     'attack-legit.dat' using 5 title 'authbrake-no-penalty' lc rgb '#6aa84f'
unset multiplot
