from .console_script import main

main()
