from nin.cli import main_exit

main_exit()
